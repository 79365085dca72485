//! The replica's connection URL, parsed once, whose password never reaches a message: its
//! `Display` and `Debug` show the URL with the password replaced by `***`.

use std::fmt;

use crate::{ReplicaError, ReplicaResult};

/// A `postgres://` (or `postgresql://`) URL. Only the URL form is accepted: a `key=value`
/// connection string has no place for the redaction to look.
#[derive(Clone)]
pub struct ReplicaUrl {
    config: postgres::Config,
    shown: String,
}

impl ReplicaUrl {
    /// Parses `url`. The error shows the URL redacted, never the password.
    pub fn parse(url: &str) -> ReplicaResult<ReplicaUrl> {
        let shown = redact(url);
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ReplicaError::Url {
                url: shown,
                reason: "give a PostgreSQL URL: postgres:// (or postgresql://) with user, password, host, port and database",
            });
        }
        // The parser's own message may quote the text it failed on, password included.
        let config = url.parse::<postgres::Config>().map_err(|_| ReplicaError::Url {
            url: shown.clone(),
            reason: "not a valid PostgreSQL URL: give postgres:// with user, password, host, port and database",
        })?;
        Ok(ReplicaUrl { config, shown })
    }

    /// The client configuration.
    pub fn config(&self) -> &postgres::Config {
        &self.config
    }
}

impl fmt::Display for ReplicaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for ReplicaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplicaUrl({})", self.shown)
    }
}

/// `url` with the password of its user part and any `password=` parameter replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL: nothing tells which part is secret, so none of it is shown.
        return "(a connection string that is not a postgres:// URL)".to_owned();
    };
    // As the client reads it: the user part runs to the first `@`, whatever it holds (a
    // password may contain `/`, `?` or `#`), and the host to the next `/`, `?` or `#`.
    let (userinfo, rest) = match rest.split_once('@') {
        Some((userinfo, rest)) => (Some(userinfo), rest),
        None => (None, rest),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(authority_end);
    let authority = match userinfo {
        Some(userinfo) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => host.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        assert_eq!(redact("postgres://lcw:s3cret@db.example:5432/lcw"), "postgres://lcw:***@db.example:5432/lcw");
        assert_eq!(redact("postgresql://lcw@127.0.0.1/lcw"), "postgresql://lcw@127.0.0.1/lcw");
        assert_eq!(redact("postgres://h/db?user=a&password=s3cret"), "postgres://h/db?user=a&password=***");
        assert_eq!(redact("postgres://a:b:c@h/db"), "postgres://a:***@h/db");
        assert!(!redact("host=h password=s3cret").contains("s3cret"));
        // The client takes everything up to the first `@` as the user part, `/`, `?` and `#`
        // included (a base64 password), and so must the redaction.
        assert_eq!(redact("postgres://lcw:ab/cd@h/db"), "postgres://lcw:***@h/db");
        assert_eq!(redact("postgres://lcw:p?ss#x@h/db?sslmode=disable"), "postgres://lcw:***@h/db?sslmode=disable");
        for (url, password) in
            [("postgres://lcw:ab/cd@127.0.0.1/db", "ab/cd"), ("postgres://lcw:p?ss@127.0.0.1/db", "p?ss")]
        {
            let parsed = ReplicaUrl::parse(url).unwrap();
            assert_eq!(parsed.config().get_password(), Some(password.as_bytes()));
            assert!(!format!("{parsed} {parsed:?}").contains(password), "{parsed}");
        }
        let url = ReplicaUrl::parse("postgres://lcw:s3cret@127.0.0.1:5432/lcw").unwrap();
        assert!(!format!("{url} {url:?}").contains("s3cret"));
        let err = ReplicaUrl::parse("mysql://lcw:s3cret@h/db").unwrap_err().to_string();
        assert!(err.contains("postgres://") && !err.contains("s3cret"), "{err}");
        let err = ReplicaUrl::parse("postgres://lcw:s3cret@h:notaport/db").unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
