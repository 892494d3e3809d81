//! The `Host` and `Origin` allow-lists of the public endpoint (edge mode): the MCP transport's
//! protection against DNS rebinding, with the gateway's rules and defaults
//! (`python/src/mcp_gateway/_host_origin.py`).
//!
//! An entry of the host list is `name` (any port), `name:port` or `*`; of the origin list
//! `scheme://host` (any port), `scheme://host:port` or `*`. Matching is case-insensitive; IPv6
//! addresses keep their brackets (`[::1]`).

/// The default `Host` list: loopback names, any port.
pub const DEFAULT_ALLOWED_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// The default `Origin` list: `http` and `https` on the loopback names, any port.
#[must_use]
pub fn default_allowed_origins() -> Vec<String> {
    ["http", "https"]
        .iter()
        .flat_map(|scheme| {
            DEFAULT_ALLOWED_HOSTS
                .iter()
                .map(move |h| format!("{scheme}://{h}"))
        })
        .collect()
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The `Host` (shown quoted, or `None` when absent) is not in the list: 421.
    Host(String),
    /// The `Origin` (shown quoted) is not in the list: 403.
    Origin(String),
}

/// The allow-lists (entries lower-cased).
#[derive(Debug, Clone)]
pub struct AllowLists {
    hosts: Vec<String>,
    origins: Vec<String>,
}

/// `"host:port"` as `("host", Some("port"))`; IPv6 keeps its brackets; no port is `None`.
fn split_host_port(netloc: &str) -> (&str, Option<&str>) {
    let netloc = netloc.trim();
    if netloc.starts_with('[') {
        return match netloc.find(']') {
            None => (netloc, None),
            Some(end) => {
                let rest = &netloc[end + 1..];
                (&netloc[..=end], rest.strip_prefix(':'))
            }
        };
    }
    match netloc.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (netloc, None),
    }
}

fn netloc_allowed<'a>(netloc: &str, allowed: impl IntoIterator<Item = &'a str>) -> bool {
    let netloc = netloc.to_ascii_lowercase();
    let (host, port) = split_host_port(&netloc);
    if host.is_empty() {
        return false;
    }
    allowed.into_iter().any(|entry| {
        if entry == "*" {
            return true;
        }
        let (eh, ep) = split_host_port(entry);
        eh == host && (ep.is_none() || ep == port)
    })
}

/// `s` quoted the way Python's `repr` quotes a plain string (the gateway's messages).
fn quoted(s: &str) -> String {
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\'', "\\'"))
    }
}

impl AllowLists {
    /// Lists from their entries (lower-cased here).
    #[must_use]
    pub fn new(hosts: &[String], origins: &[String]) -> Self {
        let lower = |v: &[String]| v.iter().map(|e| e.trim().to_ascii_lowercase()).collect();
        Self {
            hosts: lower(hosts),
            origins: lower(origins),
        }
    }

    /// Checks a request's `Host` (`None`: absent, refused) and `Origin` (`None`: absent,
    /// allowed: clients other than browsers need not send one).
    ///
    /// # Errors
    ///
    /// The [`Refusal`]: `Host` first, then `Origin`.
    pub fn check(&self, host: Option<&str>, origin: Option<&str>) -> Result<(), Refusal> {
        match host {
            Some(h) if netloc_allowed(h, self.hosts.iter().map(String::as_str)) => {}
            Some(h) => return Err(Refusal::Host(quoted(h))),
            None => return Err(Refusal::Host("None".to_owned())),
        }
        if let Some(origin) = origin {
            let lower = origin.trim().to_ascii_lowercase();
            let mut ok = self.origins.iter().any(|e| e == "*");
            if !ok
                && let Some((scheme, netloc)) = lower.split_once("://")
                && !netloc.contains('/')
            {
                ok = netloc_allowed(
                    netloc,
                    self.origins.iter().filter_map(|e| {
                        e.split_once("://")
                            .filter(|(s, _)| *s == scheme)
                            .map(|(_, n)| n)
                    }),
                );
            }
            if !ok {
                return Err(Refusal::Origin(quoted(origin)));
            }
        }
        Ok(())
    }
}

impl Default for AllowLists {
    fn default() -> Self {
        let hosts: Vec<String> = DEFAULT_ALLOWED_HOSTS
            .iter()
            .map(|h| (*h).to_owned())
            .collect();
        Self::new(&hosts, &default_allowed_origins())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_rules() {
        let d = AllowLists::default();
        assert_eq!(d.check(Some("localhost:8080"), None), Ok(()));
        assert_eq!(d.check(Some("127.0.0.1"), None), Ok(()));
        assert_eq!(d.check(Some("[::1]:9"), Some("http://[::1]:9")), Ok(()));
        assert_eq!(
            d.check(Some("LOCALHOST:1"), Some("HTTPS://localhost")),
            Ok(())
        );
        assert_eq!(
            d.check(Some("evil.example"), None),
            Err(Refusal::Host("'evil.example'".into()))
        );
        assert_eq!(d.check(None, None), Err(Refusal::Host("None".into())));
        assert_eq!(
            d.check(Some("localhost"), Some("http://evil.example")),
            Err(Refusal::Origin("'http://evil.example'".into()))
        );
        assert_eq!(
            d.check(Some("localhost"), Some("ftp://localhost")),
            Err(Refusal::Origin("'ftp://localhost'".into()))
        );
        assert!(d.check(Some("localhost"), Some("null")).is_err());
        let ported = AllowLists::new(
            &["example.com:443".into()],
            &["https://example.com:443".into()],
        );
        assert_eq!(
            ported.check(Some("example.com:443"), Some("https://example.com:443")),
            Ok(())
        );
        assert!(ported.check(Some("example.com:80"), None).is_err());
        assert!(ported.check(Some("example.com"), None).is_err());
        let any = AllowLists::new(&["*".into()], &["*".into()]);
        assert_eq!(any.check(Some("x"), Some("http://y")), Ok(()));
    }
}
