//! What the fixture offers: tool, resource and prompt definitions.
//!
//! Definitions live apart from their behaviour ([`crate::server`]) so a reader can see the
//! whole catalog, with the exact argument names and JSON schemas a client sees, in one place.

use std::sync::Arc;

use rmcp::model::{JsonObject, Prompt, PromptArgument, Resource, ResourceTemplate, Tool};
use serde_json::{Value, json};

/// `echo {text}`: returns `text` as one text content item (`text` left out: an empty one).
pub const ECHO: &str = "echo";
/// `payload {size_bytes}`: returns one text item of exactly `size_bytes` ASCII bytes.
pub const PAYLOAD: &str = "payload";
/// `sleep {ms}`: sleeps, stopping early when the request is cancelled.
pub const SLEEP: &str = "sleep";
/// `inflight {}`: the number of `sleep` and `progress` calls currently running in this
/// process (a call stops counting when it ends in any way, cancelled included).
pub const INFLIGHT: &str = "inflight";
/// `progress {steps, interval_ms}`: progress notifications, one log message, then a result;
/// stops early when the request is cancelled.
pub const PROGRESS: &str = "progress";
/// `fail {message}`: a tool result with `isError: true`.
pub const FAIL: &str = "fail";
/// `add_tool {name}` (dynamic fixture only): lists a new tool `name` (which answers
/// `added tool {name}`) and sends `notifications/tools/list_changed` to every session.
pub const ADD_TOOL: &str = "add_tool";
/// `remove_tool {name}` (dynamic fixture only): unlists a tool `add_tool` added and sends
/// `notifications/tools/list_changed` to every session.
pub const REMOVE_TOOL: &str = "remove_tool";
/// Prefix of the generated tools `gen_0000`, `gen_0001`, ...
pub const GENERATED_PREFIX: &str = "gen_";

/// URI of the single static resource.
pub const README_URI: &str = "fixture://readme";
/// Text of the static resource.
pub const README_TEXT: &str = "MCP fixture server";
/// URI template of the item resources; reading `fixture://items/{id}` returns `item {id}`.
pub const ITEM_URI_TEMPLATE: &str = "fixture://items/{id}";
/// Prefix that a concrete item URI starts with.
pub const ITEM_URI_PREFIX: &str = "fixture://items/";

/// Name of the single prompt, `greet {name}` -> "Hello, {name}!".
pub const GREET: &str = "greet";

/// Largest `payload` the fixture agrees to build (1 GiB), so a typo cannot exhaust memory.
pub const MAX_PAYLOAD_BYTES: u64 = 1 << 30;

/// The name of generated tool number `index` (`gen_0000`, `gen_0001`, ...).
pub fn generated_tool_name(index: usize) -> String {
    format!("{GENERATED_PREFIX}{index:04}")
}

/// Every tool the fixture lists: the fixed ones first, then `generated` generated tools.
pub fn tools(generated: usize) -> Vec<Tool> {
    let mut tools = vec![
        Tool::new(
            ECHO,
            "Return the given text unchanged as one text content item.",
            object_schema(
                json!({"text": {"type": "string", "description": "Text to return (default: empty)."}}),
                &[],
            ),
        ),
        Tool::new(
            PAYLOAD,
            "Return one text content item of exactly size_bytes ASCII bytes ('x' repeated).",
            object_schema(
                json!({"size_bytes": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_PAYLOAD_BYTES,
                    "description": "Length of the returned text in bytes."
                }}),
                &["size_bytes"],
            ),
        ),
        Tool::new(
            SLEEP,
            "Sleep for ms milliseconds, then return \"slept {ms} ms\". Stops early when the \
             request is cancelled (notifications/cancelled).",
            object_schema(
                json!({"ms": {"type": "integer", "minimum": 0, "description": "Milliseconds to sleep."}}),
                &["ms"],
            ),
        ),
        Tool::new(
            INFLIGHT,
            "Return the number of sleep and progress calls currently running in this server process.",
            object_schema(json!({}), &[]),
        ),
        Tool::new(
            PROGRESS,
            "Send steps progress notifications (to the request's progress token, if any) \
             interval_ms apart, then one log message, then return \"done {steps} steps\". Stops \
             early when the request is cancelled (notifications/cancelled).",
            object_schema(
                json!({
                    "steps": {"type": "integer", "minimum": 0, "description": "Number of progress notifications."},
                    "interval_ms": {"type": "integer", "minimum": 0, "description": "Pause after each notification, in milliseconds."},
                    "stamp": {"type": "boolean", "description": "Append the send time (sent_unix_ns=T, wall clock) to each progress message."}
                }),
                &["steps", "interval_ms"],
            ),
        ),
        Tool::new(
            FAIL,
            "Return a tool result with isError: true whose text is the given message.",
            object_schema(
                json!({"message": {"type": "string", "description": "Error text to return."}}),
                &["message"],
            ),
        ),
    ];
    tools.extend((0..generated).map(generated_tool));
    tools
}

/// Generated tool number `index`: a small schema, and a call returns the tool's name.
fn generated_tool(index: usize) -> Tool {
    Tool::new(
        generated_tool_name(index),
        format!("Generated tool number {index}; returns its own name."),
        object_schema(
            json!({
                "query": {"type": "string", "description": "Ignored free text."},
                "limit": {"type": "integer", "minimum": 1, "description": "Ignored count."}
            }),
            &[],
        ),
    )
}

/// The static resources.
pub fn resources() -> Vec<Resource> {
    vec![
        Resource::new(README_URI, "readme")
            .with_description("A fixed text resource.")
            .with_mime_type("text/plain"),
    ]
}

/// The resource templates.
pub fn resource_templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(ITEM_URI_TEMPLATE, "item")
            .with_description("Item {id}; reading it returns the text \"item {id}\".")
            .with_mime_type("text/plain"),
    ]
}

/// The prompts.
pub fn prompts() -> Vec<Prompt> {
    vec![Prompt::new(
        GREET,
        Some("Greet someone by name."),
        Some(vec![
            PromptArgument::new("name")
                .with_description("Who to greet.")
                .with_required(true),
        ]),
    )]
}

/// A JSON Schema `object` with the given properties and required names.
/// The tools of the dynamic fixture: `add_tool` and `remove_tool`.
pub fn dynamic_tools() -> Vec<Tool> {
    let name = || {
        object_schema(
            json!({"name": {"type": "string", "description": "The tool's name."}}),
            &["name"],
        )
    };
    vec![
        Tool::new(
            ADD_TOOL,
            "List a new tool of this name and tell every session the tool list changed.",
            name(),
        ),
        Tool::new(
            REMOVE_TOOL,
            "Unlist a tool add_tool added and tell every session the tool list changed.",
            name(),
        ),
    ]
}

/// A tool `add_tool` adds: no arguments, answers `added tool {name}`.
pub fn added_tool(name: &str) -> Tool {
    Tool::new(
        name.to_owned(),
        "A tool added at run time by add_tool.",
        object_schema(json!({}), &[]),
    )
}

fn object_schema(properties: Value, required: &[&str]) -> Arc<JsonObject> {
    let mut schema = JsonObject::new();
    schema.insert("type".to_owned(), Value::from("object"));
    schema.insert("properties".to_owned(), properties);
    schema.insert("required".to_owned(), Value::from(required));
    Arc::new(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_zero_padded() {
        assert_eq!(generated_tool_name(0), "gen_0000");
        assert_eq!(generated_tool_name(499), "gen_0499");
    }

    #[test]
    fn catalog_has_fixed_then_generated_tools() {
        let names: Vec<_> = tools(2).into_iter().map(|tool| tool.name).collect();
        assert_eq!(
            names,
            [
                ECHO, PAYLOAD, SLEEP, INFLIGHT, PROGRESS, FAIL, "gen_0000", "gen_0001"
            ]
        );
    }
}
