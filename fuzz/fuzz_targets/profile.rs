//! Network profiles as lcw reads them (`lcw_schema::profile`): `--network FILE` and the devnet's
//! `devnet.json` go through `Profile::parse` (JSON; lcw reads no other profile format), and
//! every URL an error or a report shows goes through `redact_url` / `redact_urls`.
//!
//! Asserts: parsing never panics; a profile that parses writes (compact and pretty, as
//! `Profile::save` does) to JSON that parses back equal; its `Debug` never shows an account's
//! private key; redaction never panics, is idempotent, keeps scheme and host, replaces the user
//! info with `***` and keeps the path or replaces it with `/…`: nothing else of a URL is shown.

#![no_main]

use std::path::Path;

use lcw_schema::profile::{Profile, redact_url, redact_urls};
use libfuzzer_sys::fuzz_target;

fn check_profile(text: &str) {
    let Ok(profile) = Profile::parse(text, Path::new("fuzz.json")) else { return };
    for json in [serde_json::to_string(&profile), serde_json::to_string_pretty(&profile)] {
        let json = json.expect("a parsed profile serializes");
        let again = Profile::parse(&json, Path::new("again.json"))
            .unwrap_or_else(|e| panic!("{profile:?} written as {json} does not read back: {e}"));
        assert_eq!(again, profile, "{json} reads back differently");
    }
    for url in
        [Some(&profile.rpc_url), profile.ws_url.as_ref(), profile.beacon_url.as_ref(), profile.gateway_url.as_ref()]
            .into_iter()
            .flatten()
            .chain(&profile.rpc_fallback_urls)
    {
        check_redaction(url);
    }
    let debug = format!("{profile:?}");
    for account in &profile.accounts {
        let key = alloy::hex::encode(account.private_key);
        // Only where the key is not also spelled out in a field Debug shows as it is.
        let echoed = profile.name.contains(&key) || redact_url(&profile.rpc_url).contains(&key);
        assert!(echoed || !debug.contains(&key), "Debug shows the private key of {}", account.address);
    }
}

/// `url` split as `redact_url` reads it: scheme, user info (before the last `@` of the
/// authority), host and the rest (path, query, fragment).
fn split(url: &str) -> Option<(&str, Option<&str>, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    Some(match authority.rsplit_once('@') {
        Some((user, host)) => (scheme, Some(user), host, path),
        None => (scheme, None, authority, path),
    })
}

fn check_redaction(url: &str) {
    let shown = redact_url(url);
    assert_eq!(redact_url(&shown), shown, "redacting twice changes {url:?}");
    if let Some((scheme, user, host, path)) = split(url) {
        // The scheme and host stay, the user info becomes `***`, the path stays or becomes `/…`:
        // nothing else of the URL can be shown.
        let prefix = match user {
            Some(_) => format!("{scheme}://***@{host}"),
            None => format!("{scheme}://{host}"),
        };
        let tail = shown.strip_prefix(&prefix).unwrap_or_else(|| panic!("{url:?} is shown as {shown:?}"));
        assert!(tail == path || tail == "/…", "{url:?} is shown as {shown:?}");
    }
    let _ = redact_urls(url);
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    check_profile(text);
    check_redaction(text);
});
