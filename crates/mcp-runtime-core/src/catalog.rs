//! The catalog: upstream servers and virtual servers from the TOML file (`docs/catalog.md`),
//! and the tools, resources, resource templates and prompts discovered from the upstreams at
//! start.
//!
//! Discovered entries are kept as raw JSON (already renamed with the upstream's prefix) so that
//! a `tools/list` answer is assembled by copying bytes, filtered by visibility and scope.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::auth::{AuthContext, Visibility};
use crate::upstream::{Upstream, UpstreamError};

/// Why the catalog could not be loaded. Each is a startup error.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read.
    #[error("cannot read catalog {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid catalog.
    #[error("invalid catalog: {0}")]
    Invalid(String),
    /// Two upstreams expose the same name.
    #[error("catalog collision: {kind} `{name}` is exposed by both `{first}` and `{second}`")]
    Collision {
        /// `tool` or `prompt`.
        kind: &'static str,
        /// The exposed (prefixed) name.
        name: String,
        /// Upstream id that exposed it first.
        first: String,
        /// Upstream id that exposed it again.
        second: String,
    },
    /// A required upstream could not be reached or listed.
    #[error("required upstream unavailable at start: {0}")]
    Upstream(#[from] UpstreamError),
}

/// `visibility` of an upstream in the TOML file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VisibilityKind {
    /// Everyone sees it.
    #[default]
    Public,
    /// Only the team named by `team`.
    Team,
}

/// `transport` of an upstream in the TOML file: how the runtime reaches it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// Streamable HTTP at `url` (protocol 2025-03-26 and later).
    #[default]
    StreamableHttp,
    /// The legacy HTTP+SSE transport (protocol 2024-11-05) at `url`, the server's SSE
    /// endpoint: a client of the runtime's own (`upstream/sse.rs`; rmcp has none), the
    /// Python baseline through the SDK's `sse_client`.
    Sse,
    /// A child process speaking MCP on its stdin and stdout, started and supervised by the
    /// runtime (`command`, `args`, `env`, `cwd`).
    Stdio,
}

impl TransportKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::StreamableHttp => "streamable-http",
            Self::Sse => "sse",
            Self::Stdio => "stdio",
        }
    }
}

/// A value that is not written in the catalog, or need not be: the value itself (`"text"`),
/// an environment variable of the runtime (`{ env = "NAME" }`), or the content of a file
/// (`{ file = "path" }`, its trailing line break dropped; relative to the catalog file's
/// directory). Its `Debug` form never shows a value.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Written in the catalog.
    Literal(String),
    /// The runtime's environment variable of this name.
    Env(String),
    /// The content of this file.
    File(PathBuf),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Literal(_) => f.write_str("Literal(..)"),
            Self::Env(name) => write!(f, "Env({name})"),
            Self::File(path) => write!(f, "File({})", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Table(HashMap<String, String>),
        }
        let bad = || {
            serde::de::Error::custom(
                "expected \"value\", { env = \"NAME\" } or { file = \"path\" }",
            )
        };
        match Raw::deserialize(d).map_err(|_| bad())? {
            Raw::Text(s) => Ok(Self::Literal(s)),
            Raw::Table(t) if t.len() == 1 => match t.into_iter().next() {
                Some((k, v)) if k == "env" && !v.is_empty() => Ok(Self::Env(v)),
                Some((k, v)) if k == "file" && !v.is_empty() => Ok(Self::File(PathBuf::from(v))),
                _ => Err(bad()),
            },
            Raw::Table(_) => Err(bad()),
        }
    }
}

impl Secret {
    /// The value, read now. `what` names its use in errors (``upstream `x`: header `X-Key` ``).
    ///
    /// # Errors
    ///
    /// [`CatalogError::Invalid`] naming the variable that is not set or the file that cannot
    /// be read; never the value.
    pub fn resolve(&self, what: &str) -> Result<String, CatalogError> {
        match self {
            Self::Literal(v) => Ok(v.clone()),
            Self::Env(name) => std::env::var(name).map_err(|_| {
                CatalogError::Invalid(format!(
                    "{what}: environment variable {name} is not set (or not UTF-8)"
                ))
            }),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|v| v.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| {
                    CatalogError::Invalid(format!(
                        "{what}: cannot read {}: {}",
                        path.display(),
                        e.kind()
                    ))
                }),
        }
    }

    /// A relative file made relative to `base`.
    fn relative_to(&mut self, base: &Path) {
        if let Self::File(path) = self
            && path.is_relative()
        {
            *path = base.join(&*path);
        }
    }
}

/// One `[[upstreams]]` entry (`docs/catalog.md`). Which fields apply depends on `transport`:
/// `url`, `headers` and `bearer` for HTTP, `command`, `args`, `env` and `cwd` for stdio.
/// Two entries are equal when every field is (a reload keeps such an upstream as it is).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique id, used in logs and errors.
    pub id: String,
    /// How the upstream is reached.
    #[serde(default)]
    pub transport: TransportKind,
    /// Streamable HTTP endpoint, e.g. `http://127.0.0.1:9100/mcp` (HTTP transports), written
    /// as it is or as `{ env = "NAME" }` (the variable read when the catalog is parsed).
    #[serde(default, deserialize_with = "url_value")]
    pub url: String,
    /// Headers sent with every request to the upstream (HTTP transports).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Token sent as `Authorization: Bearer <token>` (HTTP transports); never a literal.
    #[serde(default)]
    pub bearer: Option<Secret>,
    /// PEM file of the certificate authorities an `https://` upstream's certificate must chain
    /// to, instead of the system's roots (as curl's `--cacert`); relative to the catalog file's
    /// directory.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Program of a stdio upstream: a path when it contains a `/` (relative to `cwd`), else
    /// looked up on `PATH`.
    #[serde(default)]
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Its environment, over the few variables it inherits from the runtime (`HOME`,
    /// `LOGNAME`, `PATH`, `SHELL`, `TERM`, `USER`).
    #[serde(default)]
    pub env: BTreeMap<String, Secret>,
    /// Its working directory (default: the catalog file's directory, or the runtime's when
    /// the catalog was not read from a file).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Prepended to the upstream's tool and prompt names.
    #[serde(default)]
    pub prefix: String,
    /// Who may see its entries.
    #[serde(default)]
    pub visibility: VisibilityKind,
    /// The team, with `visibility = "team"`.
    #[serde(default)]
    pub team: Option<String>,
    /// Whether an unreachable upstream at start is an error (default) or only a warning.
    #[serde(default = "yes")]
    pub required: bool,
}

/// An upstream's `url`: a string, or `{ env = "NAME" }` read now.
fn url_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Secret::deserialize(d)? {
        Secret::Literal(url) => Ok(url),
        Secret::Env(name) => std::env::var(&name).map_err(|_| {
            serde::de::Error::custom(format!(
                "url: environment variable {name} is not set (or not UTF-8)"
            ))
        }),
        Secret::File(_) => Err(serde::de::Error::custom(
            "url: expected \"http://...\" or { env = \"NAME\" }",
        )),
    }
}

fn yes() -> bool {
    true
}

/// One `[[servers]]` entry: a virtual server exposing a subset of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualServerConfig {
    /// The id in `/servers/{id}/mcp`.
    pub id: String,
    /// Exposed (prefixed) tool names.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Resource URIs.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Exposed (prefixed) prompt names.
    #[serde(default)]
    pub prompts: Vec<String>,
}

/// The catalog file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// Upstream servers.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// Virtual servers.
    #[serde(default)]
    pub servers: Vec<VirtualServerConfig>,
}

impl CatalogConfig {
    /// Reads and validates a catalog file.
    ///
    /// # Errors
    ///
    /// [`CatalogError::Read`] or [`CatalogError::Invalid`].
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut cfg = Self::parse(&text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for u in &mut cfg.upstreams {
            u.relative_to(base);
        }
        Ok(cfg)
    }

    /// Parses and validates catalog TOML.
    ///
    /// # Errors
    ///
    /// [`CatalogError::Invalid`] when the TOML is malformed, ids repeat, or a team upstream
    /// names no team.
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let cfg: Self =
            toml::from_str(text).map_err(|e| CatalogError::Invalid(one_line(text, &e)))?;
        let mut ids = HashSet::new();
        for u in &cfg.upstreams {
            if !ids.insert(u.id.as_str()) {
                return Err(CatalogError::Invalid(format!(
                    "duplicate upstream id `{}`",
                    u.id
                )));
            }
            u.check_transport()?;
            if u.visibility == VisibilityKind::Team && u.team.as_deref().unwrap_or("").is_empty() {
                return Err(CatalogError::Invalid(format!(
                    "upstream `{}` has visibility \"team\" but no team",
                    u.id
                )));
            }
        }
        let mut ids = HashSet::new();
        for s in &cfg.servers {
            if !ids.insert(s.id.as_str()) {
                return Err(CatalogError::Invalid(format!(
                    "duplicate server id `{}`",
                    s.id
                )));
            }
        }
        Ok(cfg)
    }
}

/// A TOML error as one line, `line L, column C: message` (the `toml` crate's `Display` spans
/// several lines with a source excerpt, which breaks a one-line start-up error).
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Checks an HTTP upstream's `url`: an absolute `http://` or `https://` URL with a host, and
/// a `ca_file` only with `https://`. The value itself is not repeated in the error (it may come
/// from the environment and carry credentials).
fn check_url(url: &str, ca_file: bool) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("has a `url` that is not a URL ({e})"))?;
    match parsed.scheme() {
        "http" | "https" if parsed.host_str().is_none_or(str::is_empty) => {
            Err("has a `url` with no host".into())
        }
        "http" if ca_file => {
            Err("has a `ca_file` but an http:// `url` (a CA is for https:// only)".into())
        }
        "http" | "https" => Ok(()),
        other => Err(format!(
            "has a `url` with scheme `{other}`: expected http:// or https://"
        )),
    }
}

impl UpstreamConfig {
    /// Checks that the fields given are those of its transport.
    fn check_transport(&self) -> Result<(), CatalogError> {
        let stdio = self.transport == TransportKind::Stdio;
        let given = [
            ("url", !self.url.is_empty(), false),
            ("headers", !self.headers.is_empty(), false),
            ("bearer", self.bearer.is_some(), false),
            ("ca_file", self.ca_file.is_some(), false),
            ("command", !self.command.is_empty(), true),
            ("args", !self.args.is_empty(), true),
            ("env", !self.env.is_empty(), true),
            ("cwd", self.cwd.is_some(), true),
        ];
        let invalid = |what: String| {
            Err(CatalogError::Invalid(format!(
                "upstream `{}` {what}",
                self.id
            )))
        };
        if let Some((key, ..)) = given
            .iter()
            .find(|(_, set, for_stdio)| *set && *for_stdio != stdio)
        {
            return invalid(format!(
                "(transport \"{}\") has unknown field `{key}`",
                self.transport.as_str()
            ));
        }
        match self.transport {
            TransportKind::Stdio if self.command.is_empty() => {
                invalid("(stdio) needs a `command`".into())
            }
            TransportKind::StreamableHttp | TransportKind::Sse if self.url.is_empty() => {
                invalid("needs a `url`".into())
            }
            TransportKind::StreamableHttp | TransportKind::Sse => {
                match check_url(&self.url, self.ca_file.is_some()) {
                    Err(why) => invalid(why),
                    Ok(()) => self.check_bearer(),
                }
            }
            TransportKind::Stdio => Ok(()),
        }
    }

    /// A bearer token is never written in the catalog itself.
    fn check_bearer(&self) -> Result<(), CatalogError> {
        if matches!(self.bearer, Some(Secret::Literal(_))) {
            return Err(CatalogError::Invalid(format!(
                "upstream `{}` has a literal `bearer`: write {{ env = \"NAME\" }} or {{ file = \"path\" }}",
                self.id
            )));
        }
        Ok(())
    }

    /// Relative paths made relative to `base`, the catalog file's directory: `cwd` (which
    /// defaults to `base` for stdio), a secret's file, a `command` with a `/`.
    fn relative_to(&mut self, base: &Path) {
        for s in self
            .headers
            .values_mut()
            .chain(self.env.values_mut())
            .chain(self.bearer.as_mut())
        {
            s.relative_to(base);
        }
        if let Some(ca) = &mut self.ca_file {
            *ca = base.join(&*ca);
        }
        if self.transport != TransportKind::Stdio {
            return;
        }
        let cwd = base.join(self.cwd.as_deref().unwrap_or(Path::new("")));
        if self.command.contains('/') && Path::new(&self.command).is_relative() {
            self.command = cwd.join(&self.command).display().to_string();
        }
        self.cwd = Some(cwd);
    }

    /// The headers sent with every request (`headers`, and `bearer` as `Authorization`), their
    /// values read now and marked sensitive (never printed by their `Debug`).
    ///
    /// # Errors
    ///
    /// [`CatalogError::Invalid`] when a value cannot be read or is not a valid header value;
    /// the error names the header and where its value comes from, never the value.
    pub fn http_headers(&self) -> Result<reqwest::header::HeaderMap, CatalogError> {
        use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
        let mut map = HeaderMap::new();
        let value = |what: String, secret: &Secret, prefix: &str| {
            let v = secret.resolve(&what)?;
            let valid = !v.is_empty() && v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
            let mut header = HeaderValue::from_str(&format!("{prefix}{v}"))
                .ok()
                .filter(|_| valid)
                .ok_or_else(|| {
                    CatalogError::Invalid(format!(
                        "{what}: the value is empty or not a valid header value"
                    ))
                })?;
            header.set_sensitive(true);
            Ok::<_, CatalogError>(header)
        };
        for (name, secret) in &self.headers {
            let what = format!("upstream `{}`: header `{name}`", self.id);
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| CatalogError::Invalid(format!("{what}: not a valid header name")))?;
            map.insert(header, value(what, secret, "")?);
        }
        if let Some(secret) = &self.bearer {
            let what = format!("upstream `{}`: bearer token", self.id);
            map.insert(AUTHORIZATION, value(what, secret, "Bearer ")?);
        }
        Ok(map)
    }

    /// The certificate authorities of `ca_file`, read now; empty without one (the system's
    /// roots are used).
    ///
    /// # Errors
    ///
    /// [`CatalogError::Invalid`] when the file cannot be read or holds no PEM certificate.
    pub fn tls_roots(&self) -> Result<Vec<reqwest::Certificate>, CatalogError> {
        let Some(path) = &self.ca_file else {
            return Ok(Vec::new());
        };
        let invalid = |why: String| {
            CatalogError::Invalid(format!(
                "upstream `{}`: ca_file {}: {why}",
                self.id,
                path.display()
            ))
        };
        let pem = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| invalid(format!("not PEM certificates ({e})")))?;
        if certs.is_empty() {
            return Err(invalid("no PEM certificate in it".into()));
        }
        Ok(certs)
    }

    /// The stdio server's own variables (`env`), their values read now.
    ///
    /// # Errors
    ///
    /// [`CatalogError::Invalid`] when a value cannot be read (naming the variable or file).
    pub fn process_env(&self) -> Result<Vec<(String, String)>, CatalogError> {
        self.env
            .iter()
            .map(|(name, secret)| {
                let what = format!("upstream `{}`: env `{name}`", self.id);
                Ok((name.clone(), secret.resolve(&what)?))
            })
            .collect()
    }

    /// The visibility its entries inherit.
    #[must_use]
    pub fn visibility(&self) -> Visibility {
        match self.visibility {
            VisibilityKind::Public => Visibility::Public,
            VisibilityKind::Team => Visibility::Team(self.team.clone().unwrap_or_default()),
        }
    }
}

/// One discovered tool, resource, template or prompt.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Its exposed name (tools, prompts; prefix applied) or URI (resources, templates).
    pub(crate) name: String,
    /// Index of its upstream in [`Catalog::upstreams`].
    pub(crate) upstream: usize,
    /// Its name at the upstream (tools, prompts) or URI (resources, templates).
    pub(crate) upstream_name: String,
    /// Who may see it.
    pub(crate) visibility: Visibility,
    /// Its JSON object as exposed (prefix applied).
    pub(crate) json: Box<RawValue>,
}

/// An entry kind's list plus its lookup by exposed name. A tool or prompt name has one entry; a
/// resource URI or template may have one per upstream exposing it, in catalog order.
#[derive(Debug, Default)]
pub(crate) struct Entries {
    pub(crate) list: Vec<Entry>,
    pub(crate) by_name: HashMap<String, Vec<usize>>,
}

impl Entries {
    /// The entries named `name`, in catalog order.
    pub(crate) fn named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.by_name
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|&i| &self.list[i])
    }

    fn push(&mut self, entry: Entry) {
        self.by_name
            .entry(entry.name.clone())
            .or_default()
            .push(self.list.len());
        self.list.push(entry);
    }
}

/// Keeps the first of the entries with one name: what a list shows once per caller.
fn first_of_each_name<'a>(
    entries: impl Iterator<Item = &'a Entry>,
) -> impl Iterator<Item = &'a Entry> {
    let mut seen = HashSet::new();
    entries.filter(move |e| seen.insert(e.name.as_str()))
}

/// What a virtual server exposes.
#[derive(Debug, Default)]
pub(crate) struct VirtualServer {
    pub(crate) tools: HashSet<String>,
    pub(crate) resources: HashSet<String>,
    pub(crate) prompts: HashSet<String>,
}

/// One version of the catalog: upstream pool plus discovered entries. Immutable once built;
/// a change (an upstream's `list_changed`, a reload) builds a new one ([`crate::live`]).
pub struct Catalog {
    pub(crate) upstreams: Vec<Arc<Upstream>>,
    /// What discovery found at each upstream (same index; `None`: unreachable optional one).
    pub(crate) found: Vec<Option<Arc<Found>>>,
    /// The virtual servers as configured (kept to assemble the next version).
    pub(crate) servers_config: Vec<VirtualServerConfig>,
    pub(crate) tools: Entries,
    pub(crate) prompts: Entries,
    pub(crate) resources: Entries,
    /// Resource templates, each with the literal URI prefix before its first `{`.
    pub(crate) templates: Vec<(String, Entry)>,
    pub(crate) servers: HashMap<String, VirtualServer>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("upstreams", &self.upstreams.len())
            .field("tools", &self.tools.list.len())
            .field("prompts", &self.prompts.list.len())
            .field("resources", &self.resources.list.len())
            .field("templates", &self.templates.len())
            .field("servers", &self.servers.len())
            .finish()
    }
}

/// Which part of the catalog a request sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tool,
    Prompt,
    Resource,
}

impl Kind {
    /// The kind whose entry `method` calls (`tools/call`, `prompts/get`, `resources/read`).
    pub(crate) fn of_call(method: &str) -> Option<Self> {
        match method {
            "tools/call" => Some(Self::Tool),
            "prompts/get" => Some(Self::Prompt),
            "resources/read" => Some(Self::Resource),
            _ => None,
        }
    }

    /// The field naming an entry, in the entry and in the call's params.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Tool | Self::Prompt => "name",
            Self::Resource => "uri",
        }
    }

    /// The array of a list result (`{"tools":[...]}`).
    fn list_key(self) -> &'static str {
        match self {
            Self::Tool => "tools",
            Self::Prompt => "prompts",
            Self::Resource => "resources",
        }
    }

    /// Lower-case singular, for errors.
    fn as_str(self) -> &'static str {
        match self {
            Self::Tool => "tool",
            Self::Prompt => "prompt",
            Self::Resource => "resource",
        }
    }

    /// Whether the upstream's prefix is prepended to the names (tools and prompts; resource
    /// URIs are exposed as they are).
    fn prefixed(self) -> bool {
        !matches!(self, Self::Resource)
    }
}

/// Where a call goes: the upstream, and the entry's name there.
pub(crate) struct Route<'a> {
    /// The upstream serving the entry.
    pub(crate) upstream: &'a Arc<Upstream>,
    /// The name (tools, prompts) or URI (resources) to send upstream.
    pub(crate) upstream_name: &'a str,
    /// The entry's JSON as listed (`None` for a URI matched by a resource template).
    pub(crate) json: Option<&'a RawValue>,
}

impl Catalog {
    /// Connects to every upstream, discovers its tools, resources, templates and prompts, and
    /// checks names and virtual servers.
    ///
    /// # Errors
    ///
    /// [`CatalogError`]: a required upstream unreachable, a name collision, a virtual server
    /// naming an unknown tool.
    pub async fn discover(
        config: &CatalogConfig,
        max_message_bytes: usize,
    ) -> Result<Self, CatalogError> {
        Self::discover_with(config, max_message_bytes, &crate::live::Notices::none()).await
    }

    /// [`Catalog::discover`] with the upstreams reporting their `list_changed` notifications
    /// to `notices`.
    pub(crate) async fn discover_with(
        config: &CatalogConfig,
        max_message_bytes: usize,
        notices: &crate::live::Notices,
    ) -> Result<Self, CatalogError> {
        let mut upstreams = Vec::new();
        let mut found = Vec::new();
        for uc in &config.upstreams {
            let (up, f) = match start_upstream(uc, max_message_bytes, notices).await {
                Ok(started) => started,
                Err(e) => {
                    stop_all(&upstreams).await;
                    return Err(e);
                }
            };
            upstreams.push(up);
            found.push(f);
        }
        let cat = match Self::assemble(config.servers.clone(), upstreams.clone(), found, true) {
            Ok(cat) => cat,
            Err(e) => {
                stop_all(&upstreams).await;
                return Err(e);
            }
        };
        tracing::info!(catalog = ?cat, "catalog discovered");
        Ok(cat)
    }

    /// Builds a catalog version from upstreams and what each listed. `strict` (start,
    /// reload): a virtual server naming a tool no upstream exposes is an error; otherwise (an
    /// upstream's list changed) that tool is only not listed.
    ///
    /// # Errors
    ///
    /// [`CatalogError::Collision`] for a tool or prompt name exposed twice;
    /// [`CatalogError::Invalid`] for a virtual server naming an unknown tool (`strict`).
    pub(crate) fn assemble(
        servers: Vec<VirtualServerConfig>,
        upstreams: Vec<Arc<Upstream>>,
        found: Vec<Option<Arc<Found>>>,
        strict: bool,
    ) -> Result<Self, CatalogError> {
        let mut cat = Self {
            upstreams,
            found,
            servers_config: servers,
            tools: Entries::default(),
            prompts: Entries::default(),
            resources: Entries::default(),
            templates: Vec::new(),
            servers: HashMap::new(),
        };
        for index in 0..cat.upstreams.len() {
            if let Some(found) = cat.found[index].clone() {
                let uc = cat.upstreams[index].config.clone();
                cat.add(index, &uc, &found)?;
            }
        }
        for s in &cat.servers_config {
            for t in &s.tools {
                if strict && !cat.tools.by_name.contains_key(t) {
                    return Err(CatalogError::Invalid(format!(
                        "server `{}` names unknown tool `{t}`",
                        s.id
                    )));
                }
            }
        }
        for s in &cat.servers_config {
            cat.servers.insert(
                s.id.clone(),
                VirtualServer {
                    tools: s.tools.iter().cloned().collect(),
                    resources: s.resources.iter().cloned().collect(),
                    prompts: s.prompts.iter().cloned().collect(),
                },
            );
        }
        Ok(cat)
    }

    /// The upstreams whose last attempt failed at the transport, each with whether the
    /// catalog marks it required.
    pub(crate) fn upstreams_down(&self) -> Vec<(String, bool)> {
        self.upstreams
            .iter()
            .filter(|u| u.is_down())
            .map(|u| (u.config.id.clone(), u.config.required))
            .collect()
    }

    /// Stops every stdio upstream's server and waits until each has exited (shutdown).
    pub async fn stop_upstreams(&self) {
        stop_all(&self.upstreams).await;
    }

    fn entries(&self, kind: Kind) -> &Entries {
        match kind {
            Kind::Tool => &self.tools,
            Kind::Prompt => &self.prompts,
            Kind::Resource => &self.resources,
        }
    }

    /// Adds what discovery found at upstream `index`.
    fn add(
        &mut self,
        index: usize,
        uc: &UpstreamConfig,
        found: &Found,
    ) -> Result<(), CatalogError> {
        for (kind, items) in [
            (Kind::Tool, &found.tools),
            (Kind::Prompt, &found.prompts),
            (Kind::Resource, &found.resources),
        ] {
            for item in items {
                self.add_entry(kind, index, uc, item.clone())?;
            }
        }
        let vis = uc.visibility();
        for item in &found.templates {
            let Some(t) = item.get("uriTemplate").and_then(Value::as_str) else {
                continue;
            };
            let prefix = t.split('{').next().unwrap_or_default().to_owned();
            self.templates.push((
                prefix,
                Entry {
                    name: t.to_owned(),
                    upstream: index,
                    upstream_name: t.to_owned(),
                    visibility: vis.clone(),
                    json: raw(item),
                },
            ));
        }
        Ok(())
    }

    /// Adds one tool, prompt or resource under its exposed name (the upstream's prefix
    /// applied to tools and prompts). A tool or prompt name exposed twice is an error; a
    /// resource URI exposed by several upstreams is kept for each (a caller sees the first it
    /// may see, see [`Catalog::list_json`]).
    fn add_entry(
        &mut self,
        kind: Kind,
        index: usize,
        uc: &UpstreamConfig,
        mut item: Map<String, Value>,
    ) -> Result<(), CatalogError> {
        let field = kind.key();
        let Some(name) = item.get(field).and_then(Value::as_str).map(str::to_owned) else {
            return Ok(());
        };
        let exposed = if kind.prefixed() {
            format!("{}{name}", uc.prefix)
        } else {
            name.clone()
        };
        let entries = match kind {
            Kind::Tool => &mut self.tools,
            Kind::Prompt => &mut self.prompts,
            Kind::Resource => &mut self.resources,
        };
        if kind != Kind::Resource
            && let Some(first) = entries.named(&exposed).next()
        {
            return Err(CatalogError::Collision {
                kind: kind.as_str(),
                name: exposed,
                first: self.upstreams[first.upstream].config.id.clone(),
                second: uc.id.clone(),
            });
        }
        item.insert(field.to_owned(), Value::String(exposed.clone()));
        entries.push(Entry {
            name: exposed,
            upstream: index,
            upstream_name: name,
            visibility: uc.visibility(),
            json: raw(&item),
        });
        Ok(())
    }

    /// Every entry of `kind` (templates with resources) with its upstream and visibility, as
    /// one string: equal for two versions exactly when no caller can list them differently.
    pub(crate) fn everything(&self, kind: crate::live::ListKind) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mut add = |e: &Entry| {
            let _ = writeln!(
                out,
                "{}\u{0}{:?}\u{0}{}",
                self.upstreams[e.upstream].config.id,
                e.visibility,
                e.json.get()
            );
        };
        match kind {
            crate::live::ListKind::Tools => self.tools.list.iter().for_each(&mut add),
            crate::live::ListKind::Prompts => self.prompts.list.iter().for_each(&mut add),
            crate::live::ListKind::Resources => {
                self.resources.list.iter().for_each(&mut add);
                self.templates.iter().for_each(|(_, e)| add(e));
            }
        }
        out
    }

    /// Whether a virtual server id exists.
    pub(crate) fn has_server(&self, id: &str) -> bool {
        self.servers.contains_key(id)
    }

    /// Whether the caller may use `entry` of `kind` in `scope`: it must be visible, and (in a
    /// virtual server) be listed by it.
    fn allowed(&self, kind: Kind, entry: &Entry, auth: &AuthContext, scope: Option<&str>) -> bool {
        if !auth.can_see(&entry.visibility) {
            return false;
        }
        match scope.and_then(|s| self.servers.get(s)) {
            None => scope.is_none(),
            Some(vs) => match kind {
                Kind::Tool => vs.tools.contains(&entry.name),
                Kind::Prompt => vs.prompts.contains(&entry.name),
                Kind::Resource => vs.resources.contains(&entry.name),
            },
        }
    }

    /// Assembles `{"<key>":[...]}` from the visible entries of `kind`, in catalog order, each
    /// name once: a resource URI exposed by several upstreams is the first of them the caller
    /// may use (the one [`Catalog::route`] reads it from).
    pub(crate) fn list_json(&self, kind: Kind, auth: &AuthContext, scope: Option<&str>) -> String {
        json_array(
            kind.list_key(),
            first_of_each_name(
                self.entries(kind)
                    .list
                    .iter()
                    .filter(|e| self.allowed(kind, e, auth, scope)),
            ),
        )
    }

    /// Whether the caller may use at least one entry of `kind` in `scope`.
    pub(crate) fn sees_any(&self, kind: Kind, auth: &AuthContext, scope: Option<&str>) -> bool {
        self.entries(kind)
            .list
            .iter()
            .any(|e| self.allowed(kind, e, auth, scope))
    }

    /// Whether the caller sees at least one resource template in `scope` (the federated scope
    /// only, as [`Catalog::templates_json`] lists them).
    pub(crate) fn sees_any_template(&self, auth: &AuthContext, scope: Option<&str>) -> bool {
        scope.is_none()
            && self
                .templates
                .iter()
                .any(|(_, e)| auth.can_see(&e.visibility))
    }

    /// Assembles `{"resourceTemplates":[...]}`, each URI template once (the first visible
    /// upstream's, as for resources): templates are visible in the federated scope only
    /// (virtual servers list concrete resources).
    pub(crate) fn templates_json(&self, auth: &AuthContext, scope: Option<&str>) -> String {
        json_array(
            "resourceTemplates",
            first_of_each_name(
                self.templates
                    .iter()
                    .map(|(_, e)| e)
                    .filter(|e| scope.is_none() && auth.can_see(&e.visibility)),
            ),
        )
    }

    /// Where a call to `name` of `kind` goes, for this caller in this scope; `None` when no
    /// entry the caller may use has that name (not visible is not existing). A tool or prompt
    /// is looked up by its exposed name; a resource URI is a listed resource (the first
    /// upstream exposing it that the caller may use), else (federated scope only) the visible
    /// template with the longest matching literal prefix, which gets the URI unchanged.
    pub(crate) fn route<'a>(
        &'a self,
        kind: Kind,
        name: &'a str,
        auth: &AuthContext,
        scope: Option<&str>,
    ) -> Option<Route<'a>> {
        let to = |e: &'a Entry| Route {
            upstream: &self.upstreams[e.upstream],
            upstream_name: &e.upstream_name,
            json: Some(&e.json),
        };
        let mut named = self.entries(kind).named(name).peekable();
        if named.peek().is_some() {
            return named.find(|e| self.allowed(kind, e, auth, scope)).map(to);
        }
        if kind != Kind::Resource || scope.is_some() {
            return None;
        }
        // The longest literal prefix wins; among equal ones (one template exposed by several
        // upstreams) the first in catalog order, as listed.
        let mut best: Option<(usize, &Entry)> = None;
        for (p, e) in &self.templates {
            if !p.is_empty()
                && name.starts_with(p.as_str())
                && auth.can_see(&e.visibility)
                && best.is_none_or(|(len, _)| p.len() > len)
            {
                best = Some((p.len(), e));
            }
        }
        best.map(|(_, e)| Route {
            upstream: &self.upstreams[e.upstream],
            upstream_name: name,
            json: None,
        })
    }
}

/// `{"<key>":[e1,e2,...]}` from entries' raw JSON, copied without re-encoding.
fn json_array<'a>(key: &str, entries: impl Iterator<Item = &'a Entry>) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str("{\"");
    out.push_str(key);
    out.push_str("\":[");
    for (i, e) in entries.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(e.json.get());
    }
    out.push_str("]}");
    out
}

fn raw(v: &Map<String, Value>) -> Box<RawValue> {
    serde_json::value::to_raw_value(v).unwrap_or_else(|_| {
        RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!("valid JSON"))
    })
}

/// The tools, prompts, resources and templates one upstream listed, as it named them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Found {
    pub(crate) tools: Vec<Map<String, Value>>,
    pub(crate) prompts: Vec<Map<String, Value>>,
    pub(crate) resources: Vec<Map<String, Value>>,
    pub(crate) templates: Vec<Map<String, Value>>,
}

/// Creates the upstream of `uc` and discovers it: its credentials and a stdio server's
/// environment are read now (one that cannot be read is an error, also for an optional
/// upstream); an optional upstream that cannot be reached is marked down and lists nothing.
///
/// # Errors
///
/// [`CatalogError`]: a credential that cannot be read, a required upstream unreachable.
pub(crate) async fn start_upstream(
    uc: &UpstreamConfig,
    max_message_bytes: usize,
    notices: &crate::live::Notices,
) -> Result<(Arc<Upstream>, Option<Arc<Found>>), CatalogError> {
    let headers = uc.http_headers()?;
    let roots = uc.tls_roots()?;
    uc.process_env()?;
    let up = Arc::new(Upstream::new(
        uc.clone(),
        max_message_bytes,
        headers,
        roots,
        notices.clone(),
    ));
    match discover_one(&up).await {
        Ok(found) => Ok((up, Some(Arc::new(found)))),
        Err(e) if uc.required => {
            up.stop().await;
            Err(CatalogError::Upstream(e))
        }
        Err(e) => {
            up.set_down(true);
            tracing::warn!(upstream = %uc.id, error = %e, "optional upstream unavailable at start; its entries are not listed");
            Ok((up, None))
        }
    }
}

/// Stops every upstream of `ups` (their stdio servers) and waits until each has exited.
pub(crate) async fn stop_all(ups: &[Arc<Upstream>]) {
    futures::future::join_all(ups.iter().map(|u| u.stop())).await;
}

/// Connects to `up` and lists everything its server declares.
///
/// # Errors
///
/// The upstream's [`UpstreamError`].
pub(crate) async fn discover_one(up: &Upstream) -> Result<Found, UpstreamError> {
    let init = up.connect().await?.unwrap_or(Value::Null);
    let caps = init.get("capabilities").cloned().unwrap_or(Value::Null);
    let mut found = Found::default();
    if caps.get("tools").is_some() {
        found.tools = list_all(up, "tools/list", "tools").await?;
    }
    if caps.get("prompts").is_some() {
        found.prompts = list_all(up, "prompts/list", "prompts").await?;
    }
    if caps.get("resources").is_some() {
        found.resources = list_all(up, "resources/list", "resources").await?;
        found.templates = list_all(up, "resources/templates/list", "resourceTemplates").await?;
    }
    Ok(found)
}

/// Every item of a paginated list (`tools/list` with key `tools`, ...), at most 10,000 pages.
///
/// # Errors
///
/// The upstream's [`UpstreamError`].
pub(crate) async fn list_all(
    up: &Upstream,
    method: &str,
    key: &str,
) -> Result<Vec<Map<String, Value>>, UpstreamError> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let params = match &cursor {
            Some(c) => serde_json::json!({"cursor": c}),
            None => serde_json::json!({}),
        };
        let result = up.call(method, &params).await?;
        if let Some(items) = result.get(key).and_then(Value::as_array) {
            out.extend(items.iter().filter_map(|i| i.as_object().cloned()));
        }
        match result.get("nextCursor").and_then(Value::as_str) {
            Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
            _ => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(text: &str) -> String {
        match CatalogConfig::parse(text) {
            Err(CatalogError::Invalid(e)) => e,
            other => panic!("accepted or other error: {other:?}\n{text}"),
        }
    }

    #[test]
    fn each_transport_takes_its_own_fields() {
        let cfg = CatalogConfig::parse(
            r#"
[[upstreams]]
id = "s"
transport = "stdio"
command = "node"
args = ["index.js", "stdio"]
env = { LEVEL = "debug", KEY = { env = "SOME_KEY" } }
cwd = "srv"

[[upstreams]]
id = "h"
url = "http://127.0.0.1:1/mcp"
headers = { "X-Api-Key" = { file = "key.txt" } }
bearer = { env = "TOKEN" }
"#,
        )
        .unwrap();
        let (s, h) = (&cfg.upstreams[0], &cfg.upstreams[1]);
        assert_eq!(s.transport, TransportKind::Stdio);
        assert_eq!(s.args, ["index.js", "stdio"]);
        assert_eq!(s.env["KEY"], Secret::Env("SOME_KEY".into()));
        assert_eq!(h.transport, TransportKind::StreamableHttp);
        assert_eq!(h.headers["X-Api-Key"], Secret::File("key.txt".into()));
        assert_eq!(h.bearer, Some(Secret::Env("TOKEN".into())));
        for (text, words) in [
            (
                "id = \"x\"\ntransport = \"stdio\"\nurl = \"http://a/mcp\"\ncommand = \"c\"",
                "unknown field `url`",
            ),
            (
                "id = \"x\"\nurl = \"http://a/mcp\"\ncommand = \"c\"",
                "unknown field `command`",
            ),
            (
                "id = \"x\"\nurl = \"http://a/mcp\"\ncwd = \"/\"",
                "unknown field `cwd`",
            ),
            (
                "id = \"x\"\ntransport = \"stdio\"\nbearer = { env = \"T\" }\ncommand = \"c\"",
                "unknown field `bearer`",
            ),
            ("id = \"x\"\ntransport = \"stdio\"", "needs a `command`"),
            ("id = \"x\"", "needs a `url`"),
            (
                "id = \"x\"\ntransport = \"sse\"\nurl = \"http://a/sse\"\ncommand = \"c\"",
                "unknown field `command`",
            ),
            ("id = \"x\"\ntransport = \"sse\"", "needs a `url`"),
            (
                "id = \"x\"\nurl = \"http://a/mcp\"\nbearer = \"abc\"",
                "literal `bearer`",
            ),
            (
                "id = \"x\"\nurl = \"http://a/mcp\"\nheaders = { A = { env = \"B\", file = \"C\" } }",
                "env = \"NAME\"",
            ),
            (
                "id = \"x\"\nurl = \"http://a/mcp\"\nheaders = { A = { path = \"C\" } }",
                "file = \"path\"",
            ),
            (
                "id = \"x\"\ntransport = \"ws\"\nurl = \"http://a/mcp\"",
                "unknown variant",
            ),
            (
                "id = \"x\"\nurl = \"http://a/mcp\"\ntoken = \"t\"",
                "unknown field `token`",
            ),
            (
                "id = \"x\"\nurl = { env = \"MCP_RUNTIME_TEST_SURELY_UNSET_URL\" }",
                "MCP_RUNTIME_TEST_SURELY_UNSET_URL is not set",
            ),
            ("id = \"x\"\nurl = { file = \"u\" }", "url: expected"),
            (
                "id = \"x\"\nurl = \"not a url\"",
                "upstream `x` has a `url` that is not a URL (relative URL without a base)",
            ),
            (
                "id = \"x\"\nurl = \"ftp://a/mcp\"",
                "scheme `ftp`: expected http://",
            ),
            (
                "id = \"x\"\nurl = \"http://a/mcp\"\nca_file = \"ca.pem\"",
                "has a `ca_file` but an http:// `url`",
            ),
            ("id = \"x\"\nurl = \"http://\"", "not a URL (empty host)"),
            (
                "id = \"x\"\nunknown = 1",
                "line 3, column 1: unknown field `unknown`, expected one of",
            ),
        ] {
            let e = invalid(&format!("[[upstreams]]\n{text}\n"));
            assert!(e.contains(words), "{text}: {e}");
            assert!(!e.contains('\n'), "{text}: one line, not {e}");
        }
    }

    #[test]
    fn relative_paths_are_the_catalog_files_and_secrets_never_print() {
        let dir = std::env::temp_dir().join(format!("catalog-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("catalog.toml");
        std::fs::write(
            &path,
            "[[upstreams]]\nid = \"s\"\ntransport = \"stdio\"\ncommand = \"bin/server\"\nenv = { K = { file = \"k\" }, L = \"literal-value\" }\n\n\
             [[upstreams]]\nid = \"t\"\ntransport = \"stdio\"\ncommand = \"node\"\ncwd = \"/srv\"\n",
        )
        .unwrap();
        std::fs::write(dir.join("k"), "from-a-file\n").unwrap();
        let cfg = CatalogConfig::load(&path).unwrap();
        let (s, t) = (&cfg.upstreams[0], &cfg.upstreams[1]);
        assert_eq!(s.cwd.as_deref(), Some(dir.as_path()));
        assert_eq!(s.command, dir.join("bin/server").display().to_string());
        assert_eq!(
            (t.command.as_str(), t.cwd.as_deref()),
            ("node", Some(Path::new("/srv")))
        );
        let env = s.process_env().unwrap();
        assert_eq!(
            env,
            [
                ("K".into(), "from-a-file".into()),
                ("L".into(), "literal-value".into())
            ]
        );
        let printed = format!("{cfg:?}");
        assert!(
            !printed.contains("literal-value") && !printed.contains("from-a-file"),
            "{printed}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_credential_that_cannot_be_read_is_named_and_never_shown() {
        let missing = "MCP_RUNTIME_TEST_SURELY_UNSET_VARIABLE";
        let cfg = CatalogConfig::parse(&format!(
            "[[upstreams]]\nid = \"h\"\nurl = \"http://a/mcp\"\nbearer = {{ env = \"{missing}\" }}\n\n\
             [[upstreams]]\nid = \"v\"\nurl = \"http://a/mcp\"\nheaders = {{ X-Key = \"bad\\nsecret-value\" }}\n\n\
             [[upstreams]]\nid = \"f\"\nurl = \"http://a/mcp\"\nheaders = {{ X-Key = {{ file = \"/nonexistent/key\" }} }}\n"
        ))
        .unwrap();
        let e = cfg.upstreams[0].http_headers().unwrap_err().to_string();
        assert!(
            e.contains(missing) && e.contains("upstream `h`: bearer token"),
            "{e}"
        );
        let e = cfg.upstreams[1].http_headers().unwrap_err().to_string();
        assert!(
            e.contains("header `X-Key`") && !e.contains("secret-value"),
            "{e}"
        );
        let e = cfg.upstreams[2].http_headers().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/key"), "{e}");
        let ok = CatalogConfig::parse(
            "[[upstreams]]\nid = \"h\"\nurl = \"http://a/mcp\"\nheaders = { X-Key = \"k-value\" }\n",
        )
        .unwrap();
        let headers = ok.upstreams[0].http_headers().unwrap();
        assert!(headers["x-key"].is_sensitive());
        assert!(!format!("{headers:?}").contains("k-value"));
    }
}
