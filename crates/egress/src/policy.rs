//! Egress policy: service classes (where a request may go) and rules (which sessions may
//! use which classes). Default deny: a request is allowed only when a rule that covers the
//! session's environment and workload class lists a service class that matches it.
//!
//! The document (JSON) is what the policy file and `PUT /v1/egress/policy` hold:
//!
//! ```json
//! {
//!   "service_classes": [
//!     { "name": "github", "hosts": ["api.github.com", "*.githubusercontent.com"],
//!       "ports": [443], "schemes": ["https"], "methods": ["GET", "POST"] }
//!   ],
//!   "rules": [
//!     { "name": "agents-read-github", "service_classes": ["github"],
//!       "environments": ["*"], "workload_classes": ["default"], "mode": "enforce" }
//!   ]
//! }
//! ```

use std::collections::BTreeSet;

use cordon_core::ReasonCode;
use serde::{Deserialize, Serialize};

use crate::addr::{IpNet, parse_ip_literal};

/// Which protocol a request speaks towards its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP, through the forward proxy or the in-sandbox port 80.
    Http,
    /// TLS: a CONNECT tunnel, the in-sandbox port 443, or an intercepted request.
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A named set of destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceClass {
    pub name: String,
    /// Exact host names, IP literals in canonical form, or `*.suffix` (any name that ends
    /// with `.suffix`, not `suffix` itself).
    pub hosts: Vec<String>,
    /// Allowed ports; empty means the default port of each allowed scheme.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Allowed schemes; empty means both.
    #[serde(default)]
    pub schemes: Vec<Scheme>,
    /// Allowed HTTP methods (upper case); empty means any. Enforcing methods on TLS
    /// destinations makes the gateway intercept their tunnels.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Non-public address ranges this class may reach (for example an internal API);
    /// every other non-public address stays refused.
    #[serde(default)]
    pub address_ranges: Vec<IpNet>,
}

/// How a rule acts on requests it does not allow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refuse them.
    #[default]
    Enforce,
    /// Record them with the reason they would have been refused, and forward them. For
    /// trying a policy out before enforcing it. Address, SNI, session and malformed
    /// request checks are always enforced.
    Report,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Report => "report",
        }
    }
}

/// Allows service classes for sessions of some environments and workload classes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub service_classes: Vec<String>,
    /// Environments covered; `*` covers all.
    pub environments: Vec<String>,
    /// Workload classes covered; `*` covers all.
    pub workload_classes: Vec<String>,
    #[serde(default)]
    pub mode: Mode,
}

/// A whole egress policy document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressPolicy {
    #[serde(default)]
    pub service_classes: Vec<ServiceClass>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// Who is asking: the session's attributes that rules select on.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub environment: &'a str,
    pub workload_class: &'a str,
}

/// What is asked for. `host` is lower case without a trailing dot.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    pub scheme: Scheme,
    pub host: &'a str,
    pub port: u16,
    /// `None` for a tunnel whose requests the gateway does not see.
    pub method: Option<&'a str>,
}

/// The policy's answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A rule in enforce or report mode allows it through this service class.
    Allow {
        rule: String,
        service_class: String,
    },
    /// Not allowed, but a report-mode rule covers the session: forward and record
    /// `reason`.
    Report {
        rule: String,
        reason: ReasonCode,
    },
    Deny {
        reason: ReasonCode,
    },
}

/// A policy document failed validation; the message says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

impl EgressPolicy {
    /// Parses and validates a JSON document.
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        let policy: EgressPolicy =
            serde_json::from_str(text).map_err(|e| PolicyError(e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks names, host patterns, methods and references between rules and classes.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let mut names = BTreeSet::new();
        for class in &self.service_classes {
            let at = format!("service class `{}`", class.name);
            check_name(&class.name, "service class")?;
            if !names.insert(class.name.as_str()) {
                return Err(PolicyError(format!("{at} is defined twice")));
            }
            if class.hosts.is_empty() {
                return Err(PolicyError(format!("{at} lists no hosts")));
            }
            for host in &class.hosts {
                check_host_pattern(host).map_err(|e| PolicyError(format!("{at}: {e}")))?;
            }
            if class.ports.contains(&0) {
                return Err(PolicyError(format!("{at}: port 0 is not a port")));
            }
            for method in &class.methods {
                let valid = !method.is_empty()
                    && method.len() <= 32
                    && method.bytes().all(|b| b.is_ascii_uppercase() || b == b'-');
                if !valid {
                    return Err(PolicyError(format!(
                        "{at}: method `{method}` must be an upper-case HTTP method"
                    )));
                }
            }
        }
        let mut rule_names = BTreeSet::new();
        for rule in &self.rules {
            let at = format!("rule `{}`", rule.name);
            check_name(&rule.name, "rule")?;
            if !rule_names.insert(rule.name.as_str()) {
                return Err(PolicyError(format!("{at} is defined twice")));
            }
            if rule.service_classes.is_empty() {
                return Err(PolicyError(format!("{at} names no service class")));
            }
            for class in &rule.service_classes {
                if !names.contains(class.as_str()) {
                    return Err(PolicyError(format!(
                        "{at} names service class `{class}`, which is not defined"
                    )));
                }
            }
            if rule.environments.is_empty() || rule.workload_classes.is_empty() {
                return Err(PolicyError(format!(
                    "{at} must list environments and workload classes (`*` for all)"
                )));
            }
        }
        Ok(())
    }

    pub fn service_class(&self, name: &str) -> Option<&ServiceClass> {
        self.service_classes.iter().find(|c| c.name == name)
    }

    /// Decides a request. Deterministic: rules are tried in document order, and a denial
    /// names the check that failed for the closest-matching class (host, then port, then
    /// scheme, then method).
    pub fn decide(&self, subject: Subject<'_>, destination: Destination<'_>) -> Verdict {
        let mut closest = ReasonCode::EgressDestinationNotAllowed;
        let mut report_rule = None;
        for rule in self.rules.iter().filter(|r| r.covers(subject)) {
            for class in rule
                .service_classes
                .iter()
                .filter_map(|name| self.service_class(name))
            {
                match class.check(destination) {
                    Ok(()) => {
                        return Verdict::Allow {
                            rule: rule.name.clone(),
                            service_class: class.name.clone(),
                        };
                    }
                    Err(reason) => {
                        if rank(reason) > rank(closest) {
                            closest = reason;
                        }
                    }
                }
            }
            if rule.mode == Mode::Report && report_rule.is_none() {
                report_rule = Some(rule.name.clone());
            }
        }
        match report_rule {
            Some(rule) => Verdict::Report {
                rule,
                reason: closest,
            },
            None => Verdict::Deny { reason: closest },
        }
    }

    /// The service classes a rule covering `subject` allows that match `host` on
    /// `port`, in document order (to find credentials bound to them).
    pub fn classes_for<'p>(
        &'p self,
        subject: Subject<'_>,
        destination: Destination<'_>,
    ) -> impl Iterator<Item = &'p ServiceClass> {
        let mut seen = BTreeSet::new();
        self.rules
            .iter()
            .filter(move |r| r.covers(subject))
            .flat_map(|r| r.service_classes.iter())
            .filter_map(|name| self.service_class(name))
            .filter(move |c| c.check(destination).is_ok())
            .filter(move |c| seen.insert(c.name.clone()))
    }
}

impl EgressPolicy {
    /// The service classes a rule covering `subject` lists whose hosts match `host`,
    /// whatever the port or method: their address ranges say which non-public
    /// addresses the host may resolve to.
    pub fn classes_for_host<'p>(
        &'p self,
        subject: Subject<'_>,
        host: &str,
    ) -> Vec<&'p ServiceClass> {
        let mut classes: Vec<&ServiceClass> = self
            .rules
            .iter()
            .filter(|r| r.covers(subject))
            .flat_map(|r| r.service_classes.iter())
            .filter_map(|name| self.service_class(name))
            .filter(|c| c.matches_host(host))
            .collect();
        classes.dedup_by(|a, b| a.name == b.name);
        classes
    }
}

fn rank(reason: ReasonCode) -> u8 {
    match reason {
        ReasonCode::EgressPortNotAllowed => 1,
        ReasonCode::EgressSchemeNotAllowed => 2,
        ReasonCode::EgressMethodNotAllowed => 3,
        _ => 0,
    }
}

impl Rule {
    fn covers(&self, subject: Subject<'_>) -> bool {
        let matches = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
        matches(&self.environments, subject.environment)
            && matches(&self.workload_classes, subject.workload_class)
    }
}

impl ServiceClass {
    /// Whether the class lets `destination` through; otherwise the first check it fails.
    pub fn check(&self, destination: Destination<'_>) -> Result<(), ReasonCode> {
        if !self.matches_host(destination.host) {
            return Err(ReasonCode::EgressDestinationNotAllowed);
        }
        let port_allowed = if self.ports.is_empty() {
            self.allowed_schemes()
                .any(|s| s.default_port() == destination.port)
        } else {
            self.ports.contains(&destination.port)
        };
        if !port_allowed {
            return Err(ReasonCode::EgressPortNotAllowed);
        }
        if !self.allowed_schemes().any(|s| s == destination.scheme) {
            return Err(ReasonCode::EgressSchemeNotAllowed);
        }
        if let Some(method) = destination.method
            && !self.methods.is_empty()
            && !self.methods.iter().any(|m| m == method)
        {
            return Err(ReasonCode::EgressMethodNotAllowed);
        }
        Ok(())
    }

    fn allowed_schemes(&self) -> impl Iterator<Item = Scheme> + '_ {
        let all: &[Scheme] = &[Scheme::Http, Scheme::Https];
        let list = if self.schemes.is_empty() {
            all
        } else {
            &self.schemes
        };
        list.iter().copied()
    }

    /// Exact name, or `*.suffix` matching names strictly below `suffix`.
    pub fn matches_host(&self, host: &str) -> bool {
        self.hosts
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                None => pattern == host,
            })
    }

    /// Whether the class restricts methods, so its TLS traffic must be intercepted.
    pub fn restricts_methods(&self) -> bool {
        !self.methods.is_empty()
    }

    pub fn allows_address(&self, ip: std::net::IpAddr) -> bool {
        self.address_ranges.iter().any(|range| range.contains(ip))
    }
}

fn check_name(name: &str, what: &str) -> Result<(), PolicyError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(PolicyError(format!(
            "{what} name `{name}` must be 1-64 letters, digits, `-`, `_` or `.`"
        )))
    }
}

fn check_host_pattern(pattern: &str) -> Result<(), String> {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    if let Some(ip) = parse_ip_literal(name) {
        if pattern.starts_with("*.") || name != ip.to_string() {
            return Err(format!(
                "host `{pattern}` must write an IP address in canonical form (`{ip}`)"
            ));
        }
        return Ok(());
    }
    if !is_host_name(name) {
        return Err(format!(
            "host `{pattern}` must be a lower-case DNS name or `*.suffix`"
        ));
    }
    Ok(())
}

/// A lower-case DNS name: labels of letters, digits, `-` and `_`, at most 253 bytes.
pub fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> EgressPolicy {
        EgressPolicy::from_json(
            r#"{
            "service_classes": [
              {"name": "github", "hosts": ["api.github.com", "*.githubusercontent.com"],
               "ports": [443], "schemes": ["https"], "methods": ["GET"]},
              {"name": "pypi", "hosts": ["pypi.org"]}
            ],
            "rules": [
              {"name": "prod", "service_classes": ["github"], "environments": ["prod"],
               "workload_classes": ["*"]},
              {"name": "dev", "service_classes": ["github", "pypi"], "environments": ["dev"],
               "workload_classes": ["default"], "mode": "report"}
            ]}"#,
        )
        .unwrap()
    }

    const PROD: Subject<'static> = Subject {
        environment: "prod",
        workload_class: "default",
    };

    fn to(
        scheme: Scheme,
        host: &'static str,
        port: u16,
        method: Option<&'static str>,
    ) -> Destination<'static> {
        Destination {
            scheme,
            host,
            port,
            method,
        }
    }

    #[test]
    fn allows_only_what_a_covering_rule_lists() {
        let p = policy();
        let allow = p.decide(PROD, to(Scheme::Https, "api.github.com", 443, Some("GET")));
        assert_eq!(
            allow,
            Verdict::Allow {
                rule: "prod".into(),
                service_class: "github".into()
            }
        );
        let cases = [
            (
                to(Scheme::Https, "pypi.org", 443, None),
                ReasonCode::EgressDestinationNotAllowed,
            ),
            (
                to(Scheme::Https, "api.github.com", 8443, None),
                ReasonCode::EgressPortNotAllowed,
            ),
            (
                to(Scheme::Http, "api.github.com", 443, None),
                ReasonCode::EgressSchemeNotAllowed,
            ),
            (
                to(Scheme::Https, "api.github.com", 443, Some("DELETE")),
                ReasonCode::EgressMethodNotAllowed,
            ),
            (
                to(Scheme::Https, "githubusercontent.com", 443, None),
                ReasonCode::EgressDestinationNotAllowed,
            ),
            (
                to(Scheme::Https, "evil-githubusercontent.com", 443, None),
                ReasonCode::EgressDestinationNotAllowed,
            ),
        ];
        for (destination, reason) in cases {
            assert_eq!(
                p.decide(PROD, destination),
                Verdict::Deny { reason },
                "{destination:?}"
            );
        }
        assert!(matches!(
            p.decide(
                PROD,
                to(Scheme::Https, "raw.githubusercontent.com", 443, None)
            ),
            Verdict::Allow { .. }
        ));
        // Another environment with no rule: default deny.
        let staging = Subject {
            environment: "staging",
            workload_class: "default",
        };
        assert_eq!(
            p.decide(
                staging,
                to(Scheme::Https, "api.github.com", 443, Some("GET"))
            ),
            Verdict::Deny {
                reason: ReasonCode::EgressDestinationNotAllowed
            }
        );
    }

    #[test]
    fn report_mode_forwards_what_it_would_refuse() {
        let dev = Subject {
            environment: "dev",
            workload_class: "default",
        };
        let p = policy();
        assert_eq!(
            p.decide(dev, to(Scheme::Https, "example.com", 443, None)),
            Verdict::Report {
                rule: "dev".into(),
                reason: ReasonCode::EgressDestinationNotAllowed
            }
        );
        // Default ports per scheme when a class lists none.
        assert!(matches!(
            p.decide(dev, to(Scheme::Http, "pypi.org", 80, None)),
            Verdict::Allow { .. }
        ));
        assert!(matches!(
            p.decide(dev, to(Scheme::Http, "pypi.org", 8080, None)),
            Verdict::Report {
                reason: ReasonCode::EgressPortNotAllowed,
                ..
            }
        ));
    }

    #[test]
    fn invalid_documents_say_where() {
        for (doc, needle) in [
            (
                r#"{"rules":[{"name":"r","service_classes":["x"],"environments":["*"],"workload_classes":["*"]}]}"#,
                "not defined",
            ),
            (
                r#"{"service_classes":[{"name":"a","hosts":["Example.com"]}]}"#,
                "lower-case",
            ),
            (
                r#"{"service_classes":[{"name":"a","hosts":["127.1"]}]}"#,
                "canonical",
            ),
            (
                r#"{"service_classes":[{"name":"a","hosts":["a.com"],"methods":["get"]}]}"#,
                "upper-case",
            ),
            (
                r#"{"service_classes":[{"name":"a","hosts":["a.com"]},{"name":"a","hosts":["b.com"]}]}"#,
                "twice",
            ),
            (r#"{"service_classes":[],"extra":1}"#, "unknown field"),
        ] {
            let error = EgressPolicy::from_json(doc).unwrap_err();
            assert!(error.0.contains(needle), "{doc}: {error}");
        }
    }
}
