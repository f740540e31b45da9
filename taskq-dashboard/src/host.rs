//! DNS rebinding: a page on `attacker.example` whose name is made to resolve to 127.0.0.1 reaches
//! an open (loopback) dashboard as a same-origin site, so its `Origin` matches its `Host` and
//! the CSRF check passes. The browser still sends the attacker's name in `Host`, so an open
//! dashboard answers only requests whose `Host` names the machine itself: `localhost`, an IP
//! literal (which no DNS answer can rebind), or a name the operator allowed. Jupyter and Vite
//! check the same way.

use axum::http::{header, HeaderMap};

/// The `Host` names an open dashboard answers besides loopback names and IP literals.
#[derive(Clone, Debug, Default)]
pub(crate) struct AllowedHosts {
    names: Vec<String>,
}

impl AllowedHosts {
    /// Also answers requests for `name` (without port; compared without case).
    pub(crate) fn allow(&mut self, name: &str) {
        self.names
            .push(name.trim().trim_end_matches('.').to_ascii_lowercase());
    }

    /// Whether the request's `Host` names this machine or an allowed name. A request without
    /// `Host` (HTTP/1.0 tools) has no name a browser could have rebound.
    pub(crate) fn admit(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(header::HOST) else {
            return true;
        };
        let Ok(host) = host.to_str() else {
            return false;
        };
        let name = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
        is_local_or_literal(&name) || self.names.contains(&name)
    }
}

/// `host` without its `:port`; an IPv6 literal keeps its brackets.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// `localhost`, a name under `.localhost` (RFC 6761 keeps both on the machine), or an IP
/// literal.
fn is_local_or_literal(name: &str) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::Ipv4Addr>().is_ok()
        || name
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .is_some_and(|inner| inner.parse::<std::net::Ipv6Addr>().is_ok())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn admits(allowed: &AllowedHosts, host: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        allowed.admit(&headers)
    }

    #[test]
    fn loopback_names_and_literals_pass_other_names_do_not() {
        let allowed = AllowedHosts::default();
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost:1",
            "[::1]:8080",
            "10.0.0.5",
        ] {
            assert!(admits(&allowed, host), "{host}");
        }
        for host in [
            "attacker.example:8080",
            "localhost.attacker.example",
            "127.0.0.1.nip.io:8080",
            "[::1",
        ] {
            assert!(!admits(&allowed, host), "{host}");
        }
        assert!(allowed.admit(&HeaderMap::new()));
    }

    #[test]
    fn an_allowed_name_passes_with_any_port_and_case() {
        let mut allowed = AllowedHosts::default();
        allowed.allow("Ops.Internal.");
        assert!(admits(&allowed, "ops.internal:8080"));
        assert!(!admits(&allowed, "other.internal:8080"));
    }
}
