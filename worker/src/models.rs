//! The worker's model set, decided as a pure function.
//!
//! What the worker acks comes from the chain: the models added to this worker (`ModelAdded` /
//! `ModelRemoved` for its address, projected into the store's `worker_models`) that the LLM
//! server serves under exactly that name. `--models` is the set the operator means to register
//! or check; a difference between it, the chain and the LLM server is reported with the fix.
//!
//! [`plan`] takes what is known now ([`Inputs`]) and says which models are acked ([`Plan::serve`]),
//! which must be checked, warmed and pinned first ([`Plan::warm`]: no job of theirs is acked
//! before), which are no longer on chain and are unloaded once their last job is done
//! ([`Plan::unload`], [`Plan::draining`]), why a job of any other model on chain waits
//! ([`Plan::waiting`]), and the [`Mismatch`]es. The pipeline carries it out
//! (`pipeline::models`); `lcw preflight` and the start-up report print the mismatches.
//!
//! The chain knows a model only by its id, keccak256 of its name: a name comes from `--models`
//! or from the LLM server's list (Ollama's `name:latest` also names `name`). Missing models are
//! never pulled: an on-chain name is a contract name, not necessarily an Ollama library tag, and
//! pulling whatever answers to it could serve another model than the one disputers re-run, a
//! multi-gigabyte download on the operator's disk that nobody asked for.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, RwLock};

use alloy::primitives::B256;
use lcw_schema::types::ModelId;

use crate::llm::Api;

/// The models a running worker serves now (acked: on chain, listed and warm), by id with their
/// names, as its model-set follower last planned them. Cloned handles share one set; reading it
/// is cheap (the gateway heartbeat, the API's footprints). Empty before the worker has started.
#[derive(Debug, Clone, Default)]
pub struct LiveModels(Arc<RwLock<BTreeMap<B256, String>>>);

impl LiveModels {
    /// The ids served now.
    pub fn ids(&self) -> Vec<B256> {
        self.0.read().map(|m| m.keys().copied().collect()).unwrap_or_default()
    }

    /// The names served now.
    pub fn names(&self) -> Vec<String> {
        self.0.read().map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Replaces the set (the follower, after each plan).
    pub(crate) fn set(&self, served: &BTreeMap<B256, String>) {
        if let Ok(mut m) = self.0.write()
            && *m != *served
        {
            m.clone_from(served);
        }
    }
}

/// What the model set is decided from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The models added to this worker on chain (ids); `None` while not known (a store still
    /// catching up at start): the `--models` ids stand in for them.
    pub chain: Option<&'a BTreeSet<B256>>,
    /// `--models`: names (or 0x ids) the operator means to register and serve.
    pub flag: &'a [String],
    /// The names the LLM server lists; `None` when it could not be asked (what is warm stays).
    pub server: Option<&'a [String]>,
    /// The server's protocol: how a listed name matches (Ollama's bare name is `:latest`).
    pub api: Api,
    /// Models warm and pinned now, by name.
    pub warm: &'a BTreeSet<String>,
    /// Models with a job still open here (acked and not completed, or an ack in flight).
    pub busy: &'a BTreeSet<B256>,
}

/// What to do with the model set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Acked now (on chain, listed by the server, warm), by id, with the name the server knows.
    pub serve: BTreeMap<B256, String>,
    /// To check on the server, warm and pin before any job of theirs is acked.
    pub warm: Vec<String>,
    /// Warm, no longer served (removed on chain, or no longer listed), no job open: unload.
    pub unload: Vec<String>,
    /// Warm, no longer served, with jobs still open: no new ack; unloaded once they are done.
    pub draining: Vec<String>,
    /// On chain but not acked now, and why (a job of it waits, and is refused for now).
    pub waiting: BTreeMap<B256, String>,
    /// Differences between `--models`, the chain and the LLM server.
    pub mismatches: Vec<Mismatch>,
}

impl Plan {
    /// Nothing is served or about to be: every job would be refused.
    pub fn nothing_to_serve(&self) -> bool {
        self.serve.is_empty() && self.warm.is_empty()
    }

    /// The names served or about to be, for logs.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.serve.values().cloned().collect();
        names.extend(self.warm.iter().cloned());
        names.sort();
        names.dedup();
        names
    }
}

/// A difference between `--models`, the chain and the LLM server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// In `--models` but not added to this worker on chain: no job comes for it.
    NotAdded {
        /// The name as given.
        name: String,
    },
    /// Added to this worker on chain but not in `--models`: served all the same when the LLM
    /// server lists it (the chain decides), but `--models` no longer says what the worker does.
    NotInFlag {
        /// Its name, or its 0x id when none is known.
        name: String,
    },
    /// Added on chain, but the LLM server does not list it under exactly this name: its jobs
    /// would ack and then fail, so none is acked.
    NotServed {
        /// The on-chain name.
        name: String,
        /// A name the server lists that differs only in case or tag, if any.
        near: Option<String>,
        /// The server's protocol, for the fix.
        api: Api,
    },
    /// Added on chain under an id no known name hashes to (neither `--models` nor the LLM
    /// server names it).
    Unnamed {
        /// The id.
        id: B256,
    },
}

impl Mismatch {
    /// The model the line is about.
    pub fn model(&self) -> String {
        match self {
            Mismatch::NotAdded { name } | Mismatch::NotInFlag { name } | Mismatch::NotServed { name, .. } => {
                name.clone()
            }
            Mismatch::Unnamed { id } => id.to_string(),
        }
    }

    /// Whether jobs the chain sends are refused because of it (rather than the flag being off).
    pub fn refuses_jobs(&self) -> bool {
        matches!(self, Mismatch::NotServed { .. } | Mismatch::Unnamed { .. })
    }

    /// The fix, with `lcw` turning a sub-command into the full command line the operator types
    /// (the network flags added).
    pub fn fix(&self, lcw: &dyn Fn(&str) -> String) -> String {
        match self {
            Mismatch::NotAdded { name } => {
                format!("`{}` (or drop it from --models)", lcw(&format!("add-models --models {name}")))
            }
            Mismatch::NotInFlag { name } => format!(
                "add {name} to --models (LCW_MODELS), or stop serving it: `{}`",
                lcw(&format!("remove-models --models {name}"))
            ),
            Mismatch::NotServed { name, near, api } => {
                let serve = match (api, near) {
                    (Api::Ollama, Some(near)) => format!("`ollama cp {near} {name}`"),
                    (Api::Ollama, None) => format!("`ollama pull {name}` (then `ollama cp` if its tag differs)"),
                    (Api::OpenAi, _) => format!(
                        "serve it under exactly this name (llama-server `--alias {name}`, or a `[{name}]` section of \
                         its --models-preset)"
                    ),
                };
                format!("{serve}, or stop serving it: `{}`", lcw(&format!("remove-models --models {name}")))
            }
            Mismatch::Unnamed { id } => format!(
                "name it in --models (the name whose keccak256 is {id}), or stop serving it: `{}`",
                lcw(&format!("remove-models --models {id}"))
            ),
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::NotAdded { name } => {
                write!(f, "{name} is in --models but not added to this worker on chain: no job comes for it")
            }
            Mismatch::NotInFlag { name } => write!(
                f,
                "{name} is added to this worker on chain but not in --models: it is served all the same when the LLM \
                 server has it"
            ),
            Mismatch::NotServed { name, near: Some(near), .. } => write!(
                f,
                "{name} is added on chain but the LLM server does not serve that exact name (it has {near}): its jobs \
                 are not acked"
            ),
            Mismatch::NotServed { name, near: None, .. } => {
                write!(f, "{name} is added on chain but the LLM server does not serve it: its jobs are not acked")
            }
            Mismatch::Unnamed { id } => write!(
                f,
                "model {id} is added on chain but neither --models nor the LLM server names it: its jobs are not acked"
            ),
        }
    }
}

/// Whether `listed` (the server's names) serves `name` under `api`'s matching rule.
pub fn listed(api: Api, listed: &[String], name: &str) -> bool {
    api.serves(listed, name)
}

/// The names the server's list gives to model ids: each listed name, and for Ollama the bare
/// name of a `:latest` tag.
fn server_names(api: Api, server: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    for n in server {
        names.push(n.clone());
        if api == Api::Ollama
            && let Some(bare) = n.strip_suffix(":latest")
        {
            names.push(bare.to_owned());
        }
    }
    names
}

/// A listed name that differs from `name` only in case, in its `:tag`, or in writing the tag's
/// `:` as `-` (`llama3:8b` for `llama3-8b`): the exact-name trap.
fn near_name(server: &[String], name: &str) -> Option<String> {
    let base = |s: &str| s.split(':').next().unwrap_or(s).to_ascii_lowercase();
    let spelled = |s: &str| s.strip_suffix(":latest").unwrap_or(s).to_ascii_lowercase().replace([':', '_'], "-");
    server
        .iter()
        .filter(|s| s.as_str() != name)
        .find(|s| spelled(s) == spelled(name))
        .or_else(|| server.iter().filter(|s| s.as_str() != name).find(|s| base(s) == base(name)))
        .cloned()
}

/// Decides the model set (see the module's documentation).
pub fn plan(i: Inputs<'_>) -> Plan {
    // id -> name: the flag's names first (the operator's spelling), then the server's.
    let mut names: BTreeMap<B256, String> = BTreeMap::new();
    let flag_ids: BTreeMap<B256, &str> =
        i.flag.iter().filter_map(|f| ModelId::parse(f).ok().map(|id| (id.0, f.trim()))).collect();
    for (id, f) in &flag_ids {
        if !f.starts_with("0x") {
            names.entry(*id).or_insert_with(|| (*f).to_owned());
        }
    }
    for n in i.server.map(|s| server_names(i.api, s)).unwrap_or_default() {
        names.entry(ModelId::from_name(&n).0).or_insert(n);
    }
    for n in i.warm {
        names.entry(ModelId::from_name(n).0).or_insert_with(|| n.clone());
    }
    let chain: BTreeSet<B256> = match i.chain {
        Some(c) => c.clone(),
        None => flag_ids.keys().copied().collect(),
    };
    let mut out = Plan::default();
    // What should be served: on chain, named, and listed (or warm while the server cannot be asked).
    let mut target: BTreeSet<String> = BTreeSet::new();
    for id in &chain {
        let Some(name) = names.get(id) else {
            out.waiting.insert(
                *id,
                format!("its model {id} has no known name (neither --models nor the LLM server names it)"),
            );
            out.mismatches.push(Mismatch::Unnamed { id: *id });
            continue;
        };
        let served = match i.server {
            Some(server) => listed(i.api, server, name),
            None => i.warm.contains(name),
        };
        if !served {
            let reason = match i.server {
                Some(server) => {
                    let near = near_name(server, name);
                    let why = match &near {
                        Some(n) => format!("the LLM server does not serve {name} under that exact name (it has {n})"),
                        None => format!("the LLM server does not serve its model {name}"),
                    };
                    out.mismatches.push(Mismatch::NotServed { name: name.clone(), near, api: i.api });
                    why
                }
                None => format!("the LLM server could not be asked whether it serves {name}"),
            };
            out.waiting.insert(*id, reason);
            continue;
        }
        target.insert(name.clone());
        if i.warm.contains(name) {
            out.serve.insert(*id, name.clone());
        } else {
            out.warm.push(name.clone());
            out.waiting.insert(*id, format!("its model {name} is being loaded on the LLM server"));
        }
    }
    for name in i.warm.iter().filter(|n| !target.contains(*n)) {
        if i.busy.contains(&ModelId::from_name(name).0) {
            out.draining.push(name.clone());
        } else {
            out.unload.push(name.clone());
        }
    }
    if i.chain.is_some() {
        for (id, f) in &flag_ids {
            if !chain.contains(id) {
                out.mismatches.push(Mismatch::NotAdded { name: (*f).to_owned() });
            }
        }
        for id in chain.iter().filter(|id| !flag_ids.contains_key(*id)) {
            let name = names.get(id).cloned().unwrap_or_else(|| id.to_string());
            out.mismatches.push(Mismatch::NotInFlag { name });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> B256 {
        ModelId::from_name(name).0
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    struct Case {
        chain: Option<BTreeSet<B256>>,
        flag: Vec<String>,
        server: Option<Vec<String>>,
        api: Api,
        warm: BTreeSet<String>,
        busy: BTreeSet<B256>,
    }

    impl Case {
        fn new(chain: &[&str], flag: &[&str], server: &[&str], warm: &[&str]) -> Case {
            Case {
                chain: Some(chain.iter().map(|n| id(n)).collect()),
                flag: s(flag),
                server: Some(s(server)),
                api: Api::OpenAi,
                warm: warm.iter().map(|n| (*n).to_owned()).collect(),
                busy: BTreeSet::new(),
            }
        }

        fn plan(&self) -> Plan {
            plan(Inputs {
                chain: self.chain.as_ref(),
                flag: &self.flag,
                server: self.server.as_deref(),
                api: self.api,
                warm: &self.warm,
                busy: &self.busy,
            })
        }
    }

    #[test]
    fn a_model_added_on_chain_and_listed_is_warmed_before_it_is_served() {
        let p = Case::new(&["a", "b"], &["a"], &["a", "b"], &["a"]).plan();
        assert_eq!(p.serve, BTreeMap::from([(id("a"), "a".to_owned())]));
        assert_eq!(p.warm, s(&["b"]));
        assert!(p.waiting[&id("b")].contains("being loaded"), "{:?}", p.waiting);
        assert_eq!(p.mismatches, vec![Mismatch::NotInFlag { name: "b".into() }]);
        // Once warm it is served.
        let p = Case::new(&["a", "b"], &["a"], &["a", "b"], &["a", "b"]).plan();
        assert_eq!(p.serve.len(), 2);
        assert!(p.warm.is_empty() && p.waiting.is_empty());
    }

    #[test]
    fn a_model_removed_on_chain_stops_at_once_and_is_unloaded_only_when_idle() {
        let mut c = Case::new(&["a"], &["a", "b"], &["a", "b"], &["a", "b"]);
        c.busy.insert(id("b"));
        let p = c.plan();
        assert!(!p.serve.contains_key(&id("b")), "no new ack for a removed model");
        assert_eq!((p.draining.clone(), p.unload.clone()), (s(&["b"]), vec![]));
        c.busy.clear();
        let p = c.plan();
        assert_eq!((p.draining, p.unload), (vec![], s(&["b"])));
        assert!(p.mismatches.contains(&Mismatch::NotAdded { name: "b".into() }));
    }

    #[test]
    fn a_name_the_server_does_not_list_exactly_is_never_served_and_the_near_name_is_the_fix() {
        let mut c = Case::new(&["llama3-8b"], &["llama3-8b"], &["llama3:8b"], &[]);
        c.api = Api::Ollama;
        let p = c.plan();
        assert!(p.nothing_to_serve());
        let m = Mismatch::NotServed { name: "llama3-8b".into(), near: Some("llama3:8b".into()), api: Api::Ollama };
        assert_eq!(p.mismatches, vec![m.clone()]);
        assert!(m.fix(&|c| format!("lcw {c}")).starts_with("`ollama cp llama3:8b llama3-8b`"));
        assert!(p.waiting[&id("llama3-8b")].contains("exact name"));
        // OpenAI-compatible: the alias is the fix.
        let p = Case::new(&["m"], &["m"], &["other"], &[]).plan();
        let fix = p.mismatches[0].fix(&|c| format!("lcw {c}"));
        assert!(fix.contains("--alias m") && fix.contains("lcw remove-models --models m"), "{fix}");
    }

    #[test]
    fn ollama_latest_tags_name_bare_models() {
        let mut c = Case::new(&["llama3"], &[], &["llama3:latest"], &[]);
        c.api = Api::Ollama;
        let p = c.plan();
        assert_eq!(p.warm, s(&["llama3"]));
        assert_eq!(p.mismatches, vec![Mismatch::NotInFlag { name: "llama3".into() }]);
    }

    #[test]
    fn an_id_nobody_names_is_reported_with_its_id() {
        let p = Case::new(&["secret-model"], &[], &["a"], &[]).plan();
        let i = id("secret-model");
        assert!(p.mismatches.contains(&Mismatch::Unnamed { id: i }));
        assert!(p.mismatches.contains(&Mismatch::NotInFlag { name: i.to_string() }));
        assert!(p.mismatches[0].fix(&|c| format!("lcw {c}")).contains(&format!("remove-models --models {i}")));
        // A 0x id in --models counts as given, not as a name.
        let mut c = Case::new(&["secret-model"], &[], &["a"], &[]);
        c.flag = vec![i.to_string()];
        let p = c.plan();
        assert_eq!(p.mismatches, vec![Mismatch::Unnamed { id: i }]);
    }

    #[test]
    fn without_the_chain_the_flag_stands_in_and_no_mismatch_is_claimed() {
        let mut c = Case::new(&[], &["a", "b"], &["a"], &[]);
        c.chain = None;
        let p = c.plan();
        assert_eq!(p.warm, s(&["a"]));
        assert_eq!(p.mismatches.len(), 1, "only the server's: {:?}", p.mismatches);
        assert!(matches!(&p.mismatches[0], Mismatch::NotServed { name, .. } if name == "b"));
    }

    #[test]
    fn a_server_that_cannot_be_asked_keeps_what_is_warm_and_warms_nothing() {
        let mut c = Case::new(&["a", "b"], &["a", "b"], &[], &["a"]);
        c.server = None;
        let p = c.plan();
        assert_eq!(p.serve, BTreeMap::from([(id("a"), "a".to_owned())]));
        assert!(p.warm.is_empty() && p.unload.is_empty());
        assert!(p.waiting[&id("b")].contains("could not be asked"));
    }

    #[test]
    fn a_model_the_server_stops_listing_is_no_longer_acked() {
        let p = Case::new(&["a"], &["a"], &[], &["a"]).plan();
        assert!(p.nothing_to_serve());
        assert_eq!(p.unload, s(&["a"]));
    }

    #[test]
    fn nothing_added_on_chain_is_nothing_to_serve_with_the_add_models_fix() {
        let p = Case::new(&[], &["a"], &["a"], &[]).plan();
        assert!(p.nothing_to_serve());
        assert_eq!(p.mismatches, vec![Mismatch::NotAdded { name: "a".into() }]);
        assert_eq!(
            p.mismatches[0].fix(&|c| format!("lcw {c}")),
            "`lcw add-models --models a` (or drop it from --models)"
        );
    }
}
