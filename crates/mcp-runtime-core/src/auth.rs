//! The caller's identity as the gateway established it, and the visibility rule built on it.

use serde::Deserialize;

/// Which teams' entries a caller may see.
///
/// Mirrors the proto enum `mcp.runtime.v1.TeamScope`; the HTTP/JSON boundary encodes it as the
/// JSON `teams` field (`null` = unrestricted, `[]` = public only, a list = those teams). Each
/// adapter decodes its wire form into it; the core knows neither.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TeamScope {
    /// No team restriction. Grants everything only together with `is_admin`.
    Unrestricted,
    /// Public entries only.
    PublicOnly,
    /// Public entries plus those of the named teams.
    Teams(Vec<String>),
}

/// The caller, as established by the gateway from its bearer token.
///
/// The runtime trusts it (only the gateway's uid can reach the socket) and enforces visibility
/// and session ownership with it. Field meanings follow `AuthContext` in
/// `proto/mcp/runtime/v1/runtime.proto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthContext {
    /// Subject email; sessions are bound to it. Empty means anonymous.
    pub subject_email: String,
    /// Platform administrator.
    pub is_admin: bool,
    /// Team visibility.
    pub team_scope: TeamScope,
    /// Permission scopes of the token.
    pub scopes: Vec<String>,
    /// Token expiry in seconds since the Unix epoch; 0 when it does not expire.
    pub token_expires_at_unix_s: i64,
    /// W3C `traceparent` of the public request, empty when absent.
    pub traceparent: String,
    /// Gateway-assigned trace id for log correlation.
    pub trace_id: String,
}

impl AuthContext {
    /// An anonymous caller that sees public entries only.
    #[must_use]
    pub fn anonymous() -> Self {
        Self {
            subject_email: String::new(),
            is_admin: false,
            team_scope: TeamScope::PublicOnly,
            scopes: Vec::new(),
            token_expires_at_unix_s: 0,
            traceparent: String::new(),
            trace_id: String::new(),
        }
    }

    /// Whether this caller may see an entry of the given visibility.
    ///
    /// Admin with unrestricted teams sees everything; public entries are visible to all;
    /// a team entry is visible to callers whose team list names that team.
    #[must_use]
    pub fn can_see(&self, visibility: &Visibility) -> bool {
        match visibility {
            Visibility::Public => true,
            Visibility::Team(team) => match &self.team_scope {
                TeamScope::Unrestricted => self.is_admin,
                TeamScope::PublicOnly => false,
                TeamScope::Teams(teams) => teams.iter().any(|t| t == team),
            },
        }
    }
}

/// Who may see a catalog entry; every entry inherits its upstream's visibility.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub enum Visibility {
    /// Everyone.
    Public,
    /// Members of the named team (and unrestricted admins).
    Team(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(is_admin: bool, team_scope: TeamScope) -> AuthContext {
        AuthContext {
            is_admin,
            team_scope,
            ..AuthContext::anonymous()
        }
    }

    #[test]
    fn visibility_rules() {
        let alpha = Visibility::Team("alpha".into());
        let public = Visibility::Public;
        assert!(caller(true, TeamScope::Unrestricted).can_see(&alpha));
        assert!(!caller(false, TeamScope::Unrestricted).can_see(&alpha));
        assert!(!caller(true, TeamScope::PublicOnly).can_see(&alpha));
        assert!(caller(false, TeamScope::PublicOnly).can_see(&public));
        assert!(caller(false, TeamScope::Teams(vec!["alpha".into()])).can_see(&alpha));
        assert!(!caller(false, TeamScope::Teams(vec!["beta".into()])).can_see(&alpha));
    }
}
