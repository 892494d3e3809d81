//! The catalog: upstream servers and virtual servers from the TOML file (`docs/catalog.md`),
//! and the tools, resources, resource templates and prompts discovered from the upstreams at
//! start.
//!
//! Discovered entries are kept as raw JSON (already renamed with the upstream's prefix) so that
//! a `tools/list` answer is assembled by copying bytes, filtered by visibility and scope.

use std::collections::{HashMap, HashSet};
use std::path::Path;
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

/// One `[[upstreams]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique id, used in logs and errors.
    pub id: String,
    /// Streamable HTTP endpoint, e.g. `http://127.0.0.1:9100/mcp`.
    pub url: String,
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

fn yes() -> bool {
    true
}

/// One `[[servers]]` entry: a virtual server exposing a subset of the catalog.
#[derive(Debug, Clone, Deserialize)]
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
        Self::parse(&text)
    }

    /// Parses and validates catalog TOML.
    ///
    /// # Errors
    ///
    /// [`CatalogError::Invalid`] when the TOML is malformed, ids repeat, or a team upstream
    /// names no team.
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let cfg: Self = toml::from_str(text).map_err(|e| CatalogError::Invalid(e.to_string()))?;
        let mut ids = HashSet::new();
        for u in &cfg.upstreams {
            if !ids.insert(u.id.as_str()) {
                return Err(CatalogError::Invalid(format!(
                    "duplicate upstream id `{}`",
                    u.id
                )));
            }
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

impl UpstreamConfig {
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

/// An entry kind's list plus its lookup by exposed name.
#[derive(Debug, Default)]
pub(crate) struct Entries {
    pub(crate) list: Vec<Entry>,
    pub(crate) by_name: HashMap<String, usize>,
}

impl Entries {
    pub(crate) fn get(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).map(|&i| &self.list[i])
    }
}

/// What a virtual server exposes.
#[derive(Debug, Default)]
pub(crate) struct VirtualServer {
    pub(crate) tools: HashSet<String>,
    pub(crate) resources: HashSet<String>,
    pub(crate) prompts: HashSet<String>,
}

/// The live catalog: upstream pool plus discovered entries.
pub struct Catalog {
    pub(crate) upstreams: Vec<Arc<Upstream>>,
    pub(crate) tools: Entries,
    pub(crate) prompts: Entries,
    pub(crate) resources: Entries,
    /// Resource templates with the literal URI prefix before their first `{`.
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
        let mut cat = Self {
            upstreams: Vec::new(),
            tools: Entries::default(),
            prompts: Entries::default(),
            resources: Entries::default(),
            templates: Vec::new(),
            servers: HashMap::new(),
        };
        for (index, uc) in config.upstreams.iter().enumerate() {
            let up = Arc::new(Upstream::new(uc.clone(), max_message_bytes));
            cat.upstreams.push(Arc::clone(&up));
            match discover_one(&up).await {
                Ok(found) => cat.add(index, uc, found)?,
                Err(e) if uc.required => return Err(CatalogError::Upstream(e)),
                Err(e) => {
                    tracing::warn!(upstream = %uc.id, error = %e, "optional upstream unavailable at start; its entries are not listed");
                }
            }
        }
        for s in &config.servers {
            for t in &s.tools {
                if !cat.tools.by_name.contains_key(t) {
                    return Err(CatalogError::Invalid(format!(
                        "server `{}` names unknown tool `{t}`",
                        s.id
                    )));
                }
            }
            cat.servers.insert(
                s.id.clone(),
                VirtualServer {
                    tools: s.tools.iter().cloned().collect(),
                    resources: s.resources.iter().cloned().collect(),
                    prompts: s.prompts.iter().cloned().collect(),
                },
            );
        }
        tracing::info!(catalog = ?cat, "catalog discovered");
        Ok(cat)
    }

    fn entries(&self, kind: Kind) -> &Entries {
        match kind {
            Kind::Tool => &self.tools,
            Kind::Prompt => &self.prompts,
            Kind::Resource => &self.resources,
        }
    }

    /// Adds what discovery found at upstream `index`.
    fn add(&mut self, index: usize, uc: &UpstreamConfig, found: Found) -> Result<(), CatalogError> {
        for (kind, items) in [
            (Kind::Tool, found.tools),
            (Kind::Prompt, found.prompts),
            (Kind::Resource, found.resources),
        ] {
            for item in items {
                self.add_entry(kind, index, uc, item)?;
            }
        }
        let vis = uc.visibility();
        for item in found.templates {
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
                    json: raw(&item),
                },
            ));
        }
        Ok(())
    }

    /// Adds one tool, prompt or resource under its exposed name (the upstream's prefix
    /// applied to tools and prompts). A tool or prompt name exposed twice is an error; a
    /// resource URI exposed twice keeps the first.
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
        if let Some(&i) = entries.by_name.get(&exposed) {
            if kind == Kind::Resource {
                tracing::warn!(uri = %exposed, "resource exposed twice; first upstream wins");
                return Ok(());
            }
            return Err(CatalogError::Collision {
                kind: kind.as_str(),
                name: exposed,
                first: self.upstreams[entries.list[i].upstream].config.id.clone(),
                second: uc.id.clone(),
            });
        }
        item.insert(field.to_owned(), Value::String(exposed.clone()));
        entries.by_name.insert(exposed.clone(), entries.list.len());
        entries.list.push(Entry {
            name: exposed,
            upstream: index,
            upstream_name: name,
            visibility: uc.visibility(),
            json: raw(&item),
        });
        Ok(())
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

    /// Assembles `{"<key>":[...]}` from the visible entries of `kind`, in catalog order.
    pub(crate) fn list_json(&self, kind: Kind, auth: &AuthContext, scope: Option<&str>) -> String {
        json_array(
            kind.list_key(),
            self.entries(kind)
                .list
                .iter()
                .filter(|e| self.allowed(kind, e, auth, scope)),
        )
    }

    /// Assembles `{"resourceTemplates":[...]}`: templates are visible in the federated scope
    /// only (virtual servers list concrete resources).
    pub(crate) fn templates_json(&self, auth: &AuthContext, scope: Option<&str>) -> String {
        json_array(
            "resourceTemplates",
            self.templates
                .iter()
                .map(|(_, e)| e)
                .filter(|e| scope.is_none() && auth.can_see(&e.visibility)),
        )
    }

    /// Where a call to `name` of `kind` goes, for this caller in this scope; `None` when no
    /// entry the caller may use has that name (not visible is not existing). A tool or prompt
    /// is looked up by its exposed name; a resource URI is a listed resource, else (federated
    /// scope only) the visible template with the longest matching literal prefix, which gets
    /// the URI unchanged.
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
        };
        if let Some(e) = self.entries(kind).get(name) {
            return self.allowed(kind, e, auth, scope).then(|| to(e));
        }
        if kind != Kind::Resource || scope.is_some() {
            return None;
        }
        self.templates
            .iter()
            .filter(|(p, e)| {
                !p.is_empty() && name.starts_with(p.as_str()) && auth.can_see(&e.visibility)
            })
            .max_by_key(|(p, _)| p.len())
            .map(|(_, e)| Route {
                upstream: &self.upstreams[e.upstream],
                upstream_name: name,
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

#[derive(Default)]
struct Found {
    tools: Vec<Map<String, Value>>,
    prompts: Vec<Map<String, Value>>,
    resources: Vec<Map<String, Value>>,
    templates: Vec<Map<String, Value>>,
}

async fn discover_one(up: &Upstream) -> Result<Found, UpstreamError> {
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

async fn list_all(
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
