//! `lcw <command> --help` names the variable each flag reads but never prints its value: with
//! every variable the help of any command names set to a secret (node URLs with API keys, the
//! keystore password, private keys), no help text of any command or subcommand shows one.

use std::collections::BTreeSet;

use crate::lcw;

/// Variables that hold secrets whether or not a flag reads them.
const SECRET_VARS: &[&str] = &[
    "RPC_URL",
    "BEACON_API_URL",
    "WORKER_GATEWAY_URL",
    "LCW_HEAD_RPC",
    "LCW_LLM_URL",
    "LCW_PASSWORD",
    "LCW_PASSWORD_FILE",
    "LCW_IMPORT_KEY",
    "LCW_DEPLOYER_KEY",
];

/// The value `var` is set to: a URL with a key for the URL variables, a marker for the others.
fn secret(var: &str) -> String {
    let key = format!("SECRET{}", var.replace('_', ""));
    if var.ends_with("_URL") || var.ends_with("_RPC") {
        format!("https://node.example/v2/{key}?apikey={key}")
    } else {
        key
    }
}

/// `lcw <path> --help` with `env` set, stdout and stderr together.
fn help(path: &[String], env: &[(String, String)]) -> String {
    let out = lcw()
        .args(path)
        .arg("--help")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run lcw");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "`lcw {} --help` failed: {text}", path.join(" "));
    text
}

/// The subcommands a help text lists under `Commands:`, without `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every command path (`[]`, `["work"]`, `["keys", "list"]`, ...), walked from `lcw --help`.
fn command_tree() -> Vec<Vec<String>> {
    let mut paths = vec![Vec::new()];
    let mut i = 0;
    while let Some(path) = paths.get(i).cloned() {
        for sub in subcommands(&help(&path, &[])) {
            let mut child = path.clone();
            child.push(sub);
            paths.push(child);
        }
        i += 1;
    }
    paths
}

/// The variables a help text names (`[env: NAME]`).
fn env_names(help: &str) -> BTreeSet<String> {
    help.split("[env: ").skip(1).filter_map(|rest| rest.split([']', '=']).next()).map(str::to_owned).collect()
}

#[test]
fn no_help_text_of_any_command_shows_the_value_of_a_variable() {
    let tree = command_tree();
    assert!(tree.len() > 30, "every command and subcommand is walked: {tree:?}");
    assert!(tree.contains(&vec!["keys".to_owned(), "recover".to_owned()]), "{tree:?}");
    let mut vars: BTreeSet<String> = SECRET_VARS.iter().map(|v| (*v).to_owned()).collect();
    for path in &tree {
        vars.extend(env_names(&help(path, &[])));
    }
    for var in ["RPC_URL", "BEACON_API_URL", "WORKER_GATEWAY_URL", "LCW_HEAD_RPC", "LCW_LLM_URL", "LCW_IMPORT_KEY"] {
        assert!(vars.contains(var), "some help names {var}: {vars:?}");
    }
    let env: Vec<(String, String)> = vars.iter().map(|v| (v.clone(), secret(v))).collect();
    for path in &tree {
        let text = help(path, &env);
        for (var, value) in &env {
            let marker = value.rsplit('=').next().unwrap_or(value);
            assert!(!text.contains(marker), "`lcw {} --help` shows the value of {var}:\n{text}", path.join(" "));
        }
    }
    // The variables are still named: what is hidden is only their values.
    let work = help(&["work".to_owned()], &env);
    assert!(work.contains("[env: RPC_URL]") && work.contains("[env: LCW_LLM_URL]"), "{work}");
}
