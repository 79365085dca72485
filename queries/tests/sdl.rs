//! The SDL in `queries/schema.graphql` is what the server serves: a change to the API shows up
//! as a diff in review. `LCW_UPDATE_SDL=1 cargo test -p lcw-queries --test sdl` rewrites it.

use std::path::PathBuf;

#[test]
fn schema_graphql_matches_the_server() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    let served = lcw_queries::sdl();
    if std::env::var_os("LCW_UPDATE_SDL").is_some() {
        std::fs::write(&path, &served).expect("writing schema.graphql");
    }
    let committed = std::fs::read_to_string(&path).expect("queries/schema.graphql exists");
    if committed != served {
        let first = committed.lines().zip(served.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "queries/schema.graphql differs from the served schema from line {} on:\n  committed: {:?}\n  served:    {:?}\n\
             rerun with LCW_UPDATE_SDL=1 to accept the change",
            first + 1,
            committed.lines().nth(first),
            served.lines().nth(first)
        );
    }
    for root in [
        "indexerStatus",
        "job(",
        "jobs(",
        "worker(",
        "workers(",
        "exitPlan(",
        "releaseQueue(",
        "disputeWindow",
        "earnings(",
        "jobStats(",
        "models",
        "sessionRequest(",
        "sessionRequests(",
        "jobUpdated(",
        "head",
    ] {
        assert!(served.contains(root), "the schema has the root field {root}");
    }
    for scalar in ["scalar Address", "scalar BigInt", "scalar Bytes32", "scalar Timestamp"] {
        assert!(served.contains(scalar), "{scalar}");
    }
    let states = enum_values(&served, "JobState");
    assert_eq!(
        states,
        ["SUBMITTED", "ACKNOWLEDGED", "COMPLETED", "TIMED_OUT", "DISPUTED", "RESOLVED", "RELEASED"],
        "JobState lists the contract's states in the contract's order"
    );
    assert_eq!(
        enum_values(&served, "SessionRequestStatus"),
        ["OPEN", "CLAIMED", "READY", "EXPIRED"],
        "a session request's status: the stored ones and the derived EXPIRED"
    );
}

/// The values of `enum name` in the SDL, in order.
fn enum_values<'a>(sdl: &'a str, name: &str) -> Vec<&'a str> {
    sdl.split(&format!("enum {name} {{"))
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .map(|body| {
            body.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
                .collect()
        })
        .unwrap_or_default()
}
