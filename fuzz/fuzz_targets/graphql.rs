//! The GraphQL API (`lcw_queries`): request bodies POSTed to `/graphql` of the real router (the
//! Host/Origin checks, the JSON body reader, the document guard, parsing, validation, execution
//! and serialisation), over a small store built once per process (`lcw_fuzz::store`, served by
//! `lcw_fuzz::api`). Input: the body.
//!
//! Asserts: no request panics the server or answers 500; every answer is JSON, a 200 one with
//! `data` or `errors` and a refusal with an error message; no answer shows the store's file path.

#![no_main]

use axum::http::StatusCode;
use lcw_fuzz::api::Api;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|body: &[u8]| {
    let api = Api::get();
    let (status, bytes) = api.post(body);
    let text = String::from_utf8_lossy(&bytes);
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{text}");
    let json: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
    if status == StatusCode::OK {
        assert!(json.get("data").is_some() || json.get("errors").is_some(), "{text}");
    } else {
        assert!(json["errors"][0]["message"].is_string(), "{status}: {text}");
    }
    assert!(!text.contains(api.db()), "the answer shows the store's path: {text}");
});
