//! The conformance catalog: the `test_*` tools, `test://` resources and `test_*` prompts that
//! the server scenarios of the official MCP conformance suite (npm
//! `@modelcontextprotocol/conformance`, pinned in `conformance/package.json`, and its
//! prerelease run with `--spec-version 2026-07-28`) call. The multi-round-trip tools of the
//! 2026-07-28 scenarios are in [`crate::mrtr`].
//!
//! Served only when the fixture is started with `--conformance` (see
//! [`crate::SharedState::with_conformance`]), so the default catalog, which the tests and the
//! benchmark predict exactly, does not change. Each entry returns what its scenario's
//! description asks for (texts, MIME types and URIs copied from the suite), built as JSON so
//! that a reader can compare it with the suite line by line.
//!
//! Results carry `resultType: "complete"` (MCP 2026-07-28 requires it; rmcp drops it for
//! 2025-11-25 peers). `test_logging_tool` logs only as the request allows (in 2026-07-28: its
//! `_meta` `logLevel`); `test_custom_headers` and `test_custom_headers_null` annotate
//! arguments with `x-mcp-header`, which rmcp's HTTP service checks against the
//! `Mcp-Param-*` headers (SEP-2243) through [`crate::FixtureServer`]'s `get_tool`.
//!
//! Some tools ask the client for something (`test_sampling`: `sampling/createMessage`,
//! `test_elicitation*`: `elicitation/create`, and `test_list_roots`: `roots/list`, which no
//! scenario calls: this project's tests relay it); they answer a tool error when the client did
//! not declare the capability, as the suite's descriptions require.

// Sampling and `resources/subscribe` are deprecated by SEP-2577 for the 2026-07-28 protocol;
// the suite checks them for the 2025-06-18 and 2025-11-25 revisions.
#![allow(deprecated)]

use std::{collections::HashSet, sync::Arc, time::Duration};

use rmcp::{
    ErrorData, RoleServer,
    model::{
        CallToolResult, CompleteRequestParams, CompleteResult, CompletionInfo, GetPromptResult,
        JsonObject, LoggingLevel, ProgressNotificationParam, Prompt, PromptArgument,
        ReadResourceResult, Reference, Resource, ResourceTemplate, ResultType, ServerRequest, Tool,
    },
    service::RequestContext,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A 1x1 red PNG, base64 (the "minimal test image" of the image scenarios).
pub const RED_PIXEL_PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";

/// A valid WAV file (RIFF header, 8 kHz, 8-bit mono) with one silent sample, base64.
pub const SILENT_WAV: &str = "UklGRiUAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQEAAACA";

/// URI of the static text resource.
pub const STATIC_TEXT_URI: &str = "test://static-text";
/// URI of the static binary resource (the red pixel PNG).
pub const STATIC_BINARY_URI: &str = "test://static-binary";
/// URI of the resource clients may subscribe to.
pub const WATCHED_URI: &str = "test://watched-resource";
/// The resource template; `{id}` is substituted into the JSON it returns.
pub const TEMPLATE_URI: &str = "test://template/{id}/data";

/// Names of the tools, in list order.
pub const TOOLS: &[&str] = &[
    "test_simple_text",
    "test_image_content",
    "test_audio_content",
    "test_embedded_resource",
    "test_multiple_content_types",
    "test_tool_with_logging",
    "test_tool_with_progress",
    "test_error_handling",
    "test_sampling",
    "test_elicitation",
    "test_elicitation_sep1034_defaults",
    "test_elicitation_sep1330_enums",
    "json_schema_2020_12_tool",
    "test_list_roots",
    "test_logging_tool",
    "test_custom_headers",
    "test_custom_headers_null",
];

/// Whether `name` is one of the conformance tools of this module (the multi-round-trip
/// ones are [`crate::mrtr::TOOLS`]).
pub fn is_tool(name: &str) -> bool {
    TOOLS.contains(&name)
}

/// Whether `name` is one of the conformance prompts of this module (not
/// [`crate::mrtr::PROMPT`]).
pub fn is_prompt(name: &str) -> bool {
    name.starts_with("test_") && prompts().iter().any(|p| p.name == name)
}

/// A result type whose `resultType` MCP 2026-07-28 requires. The results here are decoded
/// from JSON literals, which leaves it absent; rmcp removes it again for 2025-11-25 peers.
trait Complete {
    /// The same result marked `resultType: "complete"`.
    fn complete(self) -> Self;
}

macro_rules! complete_results {
    ($($t:ty),*) => {$(
        impl Complete for $t {
            fn complete(mut self) -> Self {
                self.result_type = Some(ResultType::COMPLETE);
                self
            }
        }
    )*};
}
complete_results!(CallToolResult, GetPromptResult, ReadResourceResult);

/// Decodes a JSON literal into a result type, marked complete ([`Complete`]).
fn result_from_json<T: DeserializeOwned + Complete>(value: Value) -> Result<T, ErrorData> {
    from_json::<T>(value).map(Complete::complete)
}

/// Decodes a JSON literal into an rmcp model type. The literals are fixed, so failing is a bug
/// in this file; it is reported as an internal error rather than a panic.
fn from_json<T: DeserializeOwned>(value: Value) -> Result<T, ErrorData> {
    serde_json::from_value(value)
        .map_err(|e| ErrorData::internal_error(format!("conformance fixture: {e}"), None))
}

/// An `object` input schema with no properties (the no-argument tools).
fn empty_schema() -> Arc<JsonObject> {
    schema(json!({"type": "object", "properties": {}}))
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

/// The conformance tools with their schemas.
pub fn tools() -> Vec<Tool> {
    let string_arg = |name: &str, description: &str| {
        schema(json!({
            "type": "object",
            "properties": {name: {"type": "string", "description": description}},
            "required": [name]
        }))
    };
    vec![
        Tool::new(TOOLS[0], "Returns one text item.", empty_schema()),
        Tool::new(
            TOOLS[1],
            "Returns one PNG image (1x1 red pixel).",
            empty_schema(),
        ),
        Tool::new(TOOLS[2], "Returns one WAV audio item.", empty_schema()),
        Tool::new(
            TOOLS[3],
            "Returns one embedded text resource.",
            empty_schema(),
        ),
        Tool::new(
            TOOLS[4],
            "Returns text, an image and an embedded resource.",
            empty_schema(),
        ),
        Tool::new(
            TOOLS[5],
            "Sends three info log messages 50 ms apart, then returns.",
            empty_schema(),
        ),
        Tool::new(
            TOOLS[6],
            "Reports progress 0, 50 and 100 of 100, 50 ms apart, then returns.",
            empty_schema(),
        ),
        Tool::new(TOOLS[7], "Always returns a tool error.", empty_schema()),
        Tool::new(
            TOOLS[8],
            "Asks the client for an LLM completion (sampling/createMessage).",
            string_arg("prompt", "The prompt to send to the LLM."),
        ),
        Tool::new(
            TOOLS[9],
            "Asks the user for a username and email (elicitation/create).",
            string_arg("message", "The message to show the user."),
        ),
        Tool::new(
            TOOLS[10],
            "Elicitation with a default for every primitive type (SEP-1034).",
            empty_schema(),
        ),
        Tool::new(
            TOOLS[11],
            "Elicitation with the five enum schema variants (SEP-1330).",
            empty_schema(),
        ),
        Tool::new(
            TOOLS[12],
            "Tool with JSON Schema 2020-12 features",
            schema(json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {
                    "address": {
                        "$anchor": "addressDef",
                        "type": "object",
                        "properties": {"street": {"type": "string"}, "city": {"type": "string"}}
                    }
                },
                "properties": {
                    "name": {"type": "string"},
                    "address": {"$ref": "#/$defs/address"},
                    "contactMethod": {"type": "string", "enum": ["phone", "email"]},
                    "phone": {"type": "string"},
                    "email": {"type": "string"}
                },
                "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
                "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
                "then": {"required": ["phone"]},
                "else": {"required": ["email"]},
                "additionalProperties": false
            })),
        ),
        Tool::new(
            TOOLS[13],
            "Asks the client for its roots (roots/list) and returns their URIs.",
            empty_schema(),
        ),
        Tool::new(
            TOOLS[14],
            "Sends three info log messages, then returns. In MCP 2026-07-28 only when the \
             request's _meta sets io.modelcontextprotocol/logLevel.",
            empty_schema(),
        ),
        Tool::new(
            TOOLS[15],
            "Echoes its arguments; region and priority travel as Mcp-Param-* headers too.",
            custom_header_schema(false),
        ),
        Tool::new(
            TOOLS[16],
            "Echoes its arguments; verbose (a header too) may be null or left out.",
            custom_header_schema(true),
        ),
    ]
}

/// The input schema of the `x-mcp-header` tools (SEP-2243): `region` (string, header
/// `Mcp-Param-Region`), `priority` (integer, `Mcp-Param-Priority`), `verbose` (boolean,
/// `Mcp-Param-Verbose`; never required, and described as nullable for
/// `test_custom_headers_null`) and `query` (string, no header); `region`, `priority` and
/// `query` are required. rmcp's HTTP service checks each annotated argument against
/// its header (missing, different or badly Base64-encoded: HTTP 400, `-32020`) before the
/// call reaches the tool.
fn custom_header_schema(nullable_verbose: bool) -> Arc<JsonObject> {
    let verbose = if nullable_verbose {
        json!({"type": "boolean", "description": "May be null or absent (no header then).",
               "x-mcp-header": "Verbose"})
    } else {
        json!({"type": "boolean", "description": "A boolean header.", "x-mcp-header": "Verbose"})
    };
    schema(json!({
        "type": "object",
        "properties": {
            "region": {"type": "string", "description": "A string header.", "x-mcp-header": "Region"},
            "priority": {"type": "integer", "description": "An integer header.", "x-mcp-header": "Priority"},
            "verbose": verbose,
            "query": {"type": "string", "description": "Not a header."}
        },
        "required": ["region", "priority", "query"]
    }))
}

/// The direct resources.
pub fn resources() -> Vec<Resource> {
    vec![
        Resource::new(STATIC_TEXT_URI, "static-text")
            .with_description("A static text resource.")
            .with_mime_type("text/plain"),
        Resource::new(STATIC_BINARY_URI, "static-binary")
            .with_description("A static binary resource (1x1 red PNG).")
            .with_mime_type("image/png"),
        Resource::new(WATCHED_URI, "watched-resource")
            .with_description("A resource clients may subscribe to.")
            .with_mime_type("text/plain"),
    ]
}

/// The resource templates.
pub fn resource_templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(TEMPLATE_URI, "template-data")
            .with_description("JSON data for the given id.")
            .with_mime_type("application/json"),
    ]
}

/// The prompts.
pub fn prompts() -> Vec<Prompt> {
    let required = |name: &str, description: &str| {
        PromptArgument::new(name)
            .with_description(description)
            .with_required(true)
    };
    vec![
        Prompt::new(
            "test_simple_prompt",
            Some("A prompt without arguments."),
            None,
        ),
        Prompt::new(
            "test_prompt_with_arguments",
            Some("A prompt with two required arguments."),
            Some(vec![
                required("arg1", "First test argument"),
                required("arg2", "Second test argument"),
            ]),
        ),
        Prompt::new(
            "test_prompt_with_embedded_resource",
            Some("A prompt embedding the given resource."),
            Some(vec![required(
                "resourceUri",
                "URI of the resource to embed",
            )]),
        ),
        Prompt::new(
            "test_prompt_with_image",
            Some("A prompt with an image."),
            None,
        ),
    ]
}

/// Reads a conformance resource, or `None` when `uri` is not one.
///
/// # Errors
///
/// Only an internal error if a fixed literal does not decode.
pub fn read_resource(uri: &str) -> Result<Option<ReadResourceResult>, ErrorData> {
    let contents = match uri {
        STATIC_TEXT_URI => json!({
            "uri": uri, "mimeType": "text/plain",
            "text": "This is the content of the static text resource."
        }),
        STATIC_BINARY_URI => json!({"uri": uri, "mimeType": "image/png", "blob": RED_PIXEL_PNG}),
        WATCHED_URI => json!({
            "uri": uri, "mimeType": "text/plain", "text": "Watched resource content."
        }),
        _ => {
            let Some(id) = uri
                .strip_prefix("test://template/")
                .and_then(|rest| rest.strip_suffix("/data"))
                .filter(|id| !id.is_empty() && !id.contains('/'))
            else {
                return Ok(None);
            };
            let data =
                json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
            json!({"uri": uri, "mimeType": "application/json", "text": data.to_string()})
        }
    };
    result_from_json(json!({"contents": [contents]})).map(Some)
}

/// Answers `prompts/get` for a conformance prompt.
///
/// # Errors
///
/// `-32602` when a required argument is missing or the prompt is unknown.
pub fn get_prompt(
    name: &str,
    arguments: Option<&JsonObject>,
) -> Result<GetPromptResult, ErrorData> {
    let arg = |key: &str| {
        arguments
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                ErrorData::invalid_params(
                    format!("prompt {name} requires the argument {key}"),
                    None,
                )
            })
    };
    let messages = match name {
        "test_simple_prompt" => json!([
            {"role": "user", "content": {"type": "text", "text": "This is a simple prompt for testing."}}
        ]),
        "test_prompt_with_arguments" => {
            let (arg1, arg2) = (arg("arg1")?, arg("arg2")?);
            json!([{"role": "user", "content": {
                "type": "text", "text": format!("Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")
            }}])
        }
        "test_prompt_with_embedded_resource" => json!([
            {"role": "user", "content": {"type": "resource", "resource": {
                "uri": arg("resourceUri")?, "mimeType": "text/plain",
                "text": "Embedded resource content for testing."
            }}},
            {"role": "user", "content": {"type": "text", "text": "Please process the embedded resource above."}}
        ]),
        "test_prompt_with_image" => json!([
            {"role": "user", "content": {"type": "image", "data": RED_PIXEL_PNG, "mimeType": "image/png"}},
            {"role": "user", "content": {"type": "text", "text": "Please analyze the image above."}}
        ]),
        unknown => {
            return Err(ErrorData::invalid_params(
                format!("unknown prompt: {unknown}"),
                None,
            ));
        }
    };
    result_from_json(json!({"messages": messages}))
}

/// Answers `completion/complete`: the values of a fixed word list that start with the typed
/// prefix, for the arguments of `test_prompt_with_arguments` and the template's `{id}`.
pub fn complete(request: &CompleteRequestParams) -> CompleteResult {
    const WORDS: &[&str] = &["paris", "park", "party", "test", "testing", "tested"];
    let known = match &request.r#ref {
        Reference::Prompt(prompt) => prompt.name == "test_prompt_with_arguments",
        Reference::Resource(resource) => resource.uri == TEMPLATE_URI,
        _ => false,
    };
    let prefix = request.argument.value.as_str();
    let values: Vec<String> = if known {
        WORDS
            .iter()
            .filter(|word| word.starts_with(prefix))
            .map(|word| (*word).to_owned())
            .collect()
    } else {
        Vec::new()
    };
    CompleteResult::new(CompletionInfo::with_all_values(values).unwrap_or_default())
}

/// The subscriptions of one session (`resources/subscribe`, `resources/unsubscribe`).
#[derive(Debug, Default)]
pub struct Subscriptions(HashSet<String>);

impl Subscriptions {
    /// Records a subscription to `uri`.
    ///
    /// # Errors
    ///
    /// `-32002` when `uri` is not a resource of this catalog.
    pub fn subscribe(&mut self, uri: &str) -> Result<(), ErrorData> {
        if resources().iter().all(|r| r.uri != uri) {
            return Err(ErrorData::resource_not_found(
                format!("no resource at {uri}"),
                None,
            ));
        }
        self.0.insert(uri.to_owned());
        Ok(())
    }

    /// Removes the subscription to `uri` (no error when there was none).
    pub fn unsubscribe(&mut self, uri: &str) {
        self.0.remove(uri);
    }

    /// Whether this session is subscribed to `uri`.
    #[must_use]
    pub fn contains(&self, uri: &str) -> bool {
        self.0.contains(uri)
    }
}

/// Runs a conformance tool. `log` sends one `notifications/message` tied to the request.
///
/// # Errors
///
/// `-32602` for missing arguments, internal errors when the client is gone.
pub async fn call_tool<L, F>(
    name: &str,
    args: &JsonObject,
    context: &RequestContext<RoleServer>,
    log: L,
) -> Result<CallToolResult, ErrorData>
where
    L: Fn(LoggingLevel, String) -> F,
    F: Future<Output = Result<(), ErrorData>>,
{
    let pause = || tokio::time::sleep(Duration::from_millis(50));
    let content = match name {
        "test_simple_text" => {
            json!([{"type": "text", "text": "This is a simple text response for testing."}])
        }
        "test_image_content" => {
            json!([{"type": "image", "data": RED_PIXEL_PNG, "mimeType": "image/png"}])
        }
        "test_audio_content" => {
            json!([{"type": "audio", "data": SILENT_WAV, "mimeType": "audio/wav"}])
        }
        "test_embedded_resource" => json!([{"type": "resource", "resource": {
            "uri": "test://embedded-resource", "mimeType": "text/plain",
            "text": "This is an embedded resource content."
        }}]),
        "test_multiple_content_types" => json!([
            {"type": "text", "text": "Multiple content types test:"},
            {"type": "image", "data": RED_PIXEL_PNG, "mimeType": "image/png"},
            {"type": "resource", "resource": {
                "uri": "test://mixed-content-resource", "mimeType": "application/json",
                "text": json!({"test": "data", "value": 123}).to_string()
            }}
        ]),
        "test_tool_with_logging" => {
            log(LoggingLevel::Info, "Tool execution started".to_owned()).await?;
            pause().await;
            log(LoggingLevel::Info, "Tool processing data".to_owned()).await?;
            pause().await;
            log(LoggingLevel::Info, "Tool execution completed".to_owned()).await?;
            json!([{"type": "text", "text": "Tool with logging executed successfully"}])
        }
        "test_tool_with_progress" => {
            let token = context.meta.get_progress_token();
            for (i, progress) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                if i > 0 {
                    pause().await;
                }
                if let Some(token) = &token {
                    context
                        .peer
                        .notify_progress(
                            ProgressNotificationParam::new(token.clone(), progress)
                                .with_total(100.0),
                        )
                        .await
                        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                }
            }
            json!([{"type": "text", "text": "Tool with progress executed successfully"}])
        }
        "test_error_handling" => {
            return result_from_json(json!({"isError": true, "content": [
                {"type": "text", "text": "This tool intentionally returns an error for testing"}
            ]}));
        }
        "test_sampling" => return sampling(args, context).await,
        "test_elicitation"
        | "test_elicitation_sep1034_defaults"
        | "test_elicitation_sep1330_enums" => {
            return elicitation(name, args, context).await;
        }
        "test_list_roots" => return list_roots(context).await,
        "test_logging_tool" => {
            for n in 1..=3 {
                log(LoggingLevel::Info, format!("test_logging_tool message {n}")).await?;
            }
            json!([{"type": "text", "text": "Logging tool executed"}])
        }
        "test_custom_headers" | "test_custom_headers_null" => {
            json!([{"type": "text", "text": Value::Object(args.clone()).to_string()}])
        }
        "json_schema_2020_12_tool" => {
            json!([{"type": "text", "text": Value::Object(args.clone()).to_string()}])
        }
        unknown => {
            return Err(ErrorData::invalid_params(
                format!("unknown tool: {unknown}"),
                None,
            ));
        }
    };
    result_from_json(json!({"content": content}))
}

/// A tool error with one text item.
fn tool_error(text: &str) -> Result<CallToolResult, ErrorData> {
    result_from_json(json!({"isError": true, "content": [{"type": "text", "text": text}]}))
}

/// `test_sampling`: one `sampling/createMessage` to the client, its answer as text.
async fn sampling(
    args: &JsonObject,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let prompt = args
        .get("prompt")
        .and_then(Value::as_str)
        .ok_or_else(|| ErrorData::invalid_params("test_sampling requires prompt", None))?;
    let supported = context
        .peer
        .peer_info()
        .is_some_and(|info| info.capabilities.sampling.is_some());
    if !supported {
        return tool_error("the client does not support sampling");
    }
    let params = from_json(json!({
        "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
        "maxTokens": 100
    }))?;
    match context.peer.create_message(params).await {
        Ok(result) => {
            let answer = serde_json::to_value(&result.message.content)
                .ok()
                .and_then(|c| c.get("text").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            result_from_json(
                json!({"content": [{"type": "text", "text": format!("LLM response: {answer}")}]}),
            )
        }
        Err(e) => tool_error(&format!("sampling failed: {e}")),
    }
}

/// The `elicitation/create` schema each elicitation tool sends.
fn elicitation_request(name: &str, args: &JsonObject) -> Result<Value, ErrorData> {
    Ok(match name {
        "test_elicitation" => {
            let message = args.get("message").and_then(Value::as_str).ok_or_else(|| {
                ErrorData::invalid_params("test_elicitation requires message", None)
            })?;
            json!({"mode": "form", "message": message, "requestedSchema": {
                "type": "object",
                "properties": {
                    "username": {"type": "string", "description": "User's response"},
                    "email": {"type": "string", "description": "User's email address"}
                },
                "required": ["username", "email"]
            }})
        }
        "test_elicitation_sep1034_defaults" => json!({"mode": "form",
            "message": "Please review and update the form fields with defaults",
            "requestedSchema": {"type": "object", "properties": {
                "name": {"type": "string", "description": "User name", "default": "John Doe"},
                "age": {"type": "integer", "description": "User age", "default": 30},
                "score": {"type": "number", "description": "User score", "default": 95.5},
                "status": {"type": "string", "description": "User status",
                           "enum": ["active", "inactive", "pending"], "default": "active"},
                "verified": {"type": "boolean", "description": "Verification status", "default": true}
            }}
        }),
        _ => json!({"mode": "form", "message": "Please select options from the enum fields",
            "requestedSchema": {"type": "object", "properties": {
                "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {"type": "string", "oneOf": [
                    {"const": "value1", "title": "First Option"},
                    {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"}
                ]},
                "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"],
                               "enumNames": ["Option One", "Option Two", "Option Three"]},
                "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
                "titledMulti": {"type": "array", "items": {"anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"}
                ]}}
            }}
        }),
    })
}

/// `test_list_roots`: one `roots/list` to the client; the URIs of its roots as text, one per
/// line, after `Roots:`.
async fn list_roots(context: &RequestContext<RoleServer>) -> Result<CallToolResult, ErrorData> {
    let supported = context
        .peer
        .peer_info()
        .is_some_and(|info| info.capabilities.roots.is_some());
    if !supported {
        return tool_error("the client does not support roots");
    }
    match context.peer.list_roots().await {
        Ok(result) => {
            let uris: Vec<&str> = result.roots.iter().map(|r| r.uri.as_str()).collect();
            result_from_json(json!({"content": [{"type": "text",
                "text": format!("Roots: {}", uris.join("\n"))}]}))
        }
        Err(e) => tool_error(&format!("roots/list failed: {e}")),
    }
}

/// The elicitation tools: one `elicitation/create` to the client, its answer as text.
async fn elicitation(
    name: &str,
    args: &JsonObject,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let request = elicitation_request(name, args)?;
    let supported = context
        .peer
        .peer_info()
        .is_some_and(|info| info.capabilities.elicitation.is_some());
    if !supported {
        return tool_error("the client does not support elicitation");
    }
    // Sent as a generic request: rmcp's typed `create_elicitation` needs its `elicitation`
    // feature (and the `url` crate) for nothing else.
    let request: ServerRequest =
        from_json(json!({"method": "elicitation/create", "params": request}))?;
    match context.peer.send_request(request).await {
        Ok(result) => {
            let answer = serde_json::to_value(&result).unwrap_or_default();
            let action = answer.get("action").cloned().unwrap_or_default();
            let content = answer.get("content").cloned().unwrap_or_default();
            let prefix = if name == "test_elicitation" {
                "User response"
            } else {
                "Elicitation completed"
            };
            result_from_json(json!({"content": [{"type": "text",
                "text": format!("{prefix}: action={action}, content={content}")}]}))
        }
        Err(e) => tool_error(&format!("elicitation failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_tool_is_recognised() {
        let names: Vec<_> = tools().into_iter().map(|t| t.name.to_string()).collect();
        assert_eq!(names, TOOLS);
    }

    #[test]
    fn template_substitutes_the_id() {
        let result = read_resource("test://template/123/data").unwrap().unwrap();
        let json = serde_json::to_value(&result).unwrap();
        let text = json["contents"][0]["text"].as_str().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(text).unwrap(),
            json!({"id": "123", "templateTest": true, "data": "Data for ID: 123"})
        );
        assert!(read_resource("test://template//data").unwrap().is_none());
    }

    #[test]
    fn prompts_decode_and_check_arguments() {
        for prompt in prompts() {
            let args: JsonObject = serde_json::from_value(json!({
                "arg1": "hello", "arg2": "world", "resourceUri": "test://x"
            }))
            .unwrap();
            assert!(
                get_prompt(&prompt.name, Some(&args)).is_ok(),
                "{}",
                prompt.name
            );
        }
        assert!(get_prompt("test_prompt_with_arguments", None).is_err());
    }

    #[test]
    fn subscriptions_accept_only_known_resources() {
        let mut subs = Subscriptions::default();
        subs.subscribe(WATCHED_URI).unwrap();
        assert!(subs.subscribe("test://nope").is_err());
        subs.unsubscribe(WATCHED_URI);
        assert!(subs.0.is_empty());
    }
}
