//! LLM backends (being written).
