//! The conformance catalog's multi-round-trip tools and prompt (SEP-2322, MCP 2026-07-28):
//! what the `input-required-result-*` and `server-stateless` scenarios of the conformance
//! suite's 2026-07-28 run call.
//!
//! Instead of asking the client something in the middle of a call (2025-11-25's
//! `sampling/createMessage`, `elicitation/create`, `roots/list` on the call's stream), each of
//! these answers an [`InputRequiredResult`]: `inputRequests` keyed by name, and for the
//! stateful ones an integrity-protected `requestState` ([`RequestStateCodec`], sealed with a
//! key drawn at start-up and bound to the tool's name). The client retries the same request
//! with `inputResponses` under the same keys and the `requestState` echoed; then the tool
//! completes. A retry that lacks a key (or answers none of them) is asked again, never
//! refused; a key whose answer is not the expected result type (an `ElicitResult`,
//! `CreateMessageResult`, `ListRootsResult`) is `-32602`; a `requestState` that fails
//! verification (tampered, sealed by another process, expired after [`STATE_TTL`]) is
//! `-32602`. Keys nobody asked for are ignored.
//!
//! Each input request needs the matching capability among those the request declares in
//! `_meta['io.modelcontextprotocol/clientCapabilities']` (a 2025-11-25 session: those of its
//! `initialize`); without it the call is `-32021` (missing required client capability), with
//! `error.data.requiredCapabilities` naming it, except `test_input_required_result_capabilities`,
//! which asks only for what was declared.
//!
//! rmcp lets an [`InputRequiredResult`] reach only a peer speaking 2026-07-28 or later; a
//! 2025-11-25 session calling one of these gets a JSON-RPC error from rmcp instead.

// Sampling is deprecated by SEP-2577 for 2026-07-28, but input requests may still carry it.
#![allow(deprecated)]

use std::{sync::Arc, time::Duration};

use rmcp::{
    ErrorData, RoleServer,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ContentBlock,
        CreateMessageRequest, CreateMessageRequestParams, CreateMessageResult, ElicitRequest,
        ElicitRequestParams, ElicitResult, ElicitationAction, GetPromptRequestParams,
        GetPromptResponse, GetPromptResult, InputRequest, InputRequests, InputRequiredResult,
        InputResponses, JsonObject, ListRootsRequest, ListRootsResult, Prompt, PromptMessage,
        RequestStateCodec, Role, SamplingMessage, SealOptions, Tool,
    },
    service::RequestContext,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

/// `test_input_required_result_elicitation`: asks `user_name` (elicitation), then answers
/// `Hello, <name>!`. Stateless.
pub const ELICITATION: &str = "test_input_required_result_elicitation";
/// `test_input_required_result_sampling`: asks `capital_question` (sampling), then answers
/// `LLM response: <text>`. Stateless.
pub const SAMPLING: &str = "test_input_required_result_sampling";
/// `test_input_required_result_list_roots`: asks `client_roots` (roots/list), then answers
/// `Roots: <uri>, ...`. Stateless.
pub const LIST_ROOTS: &str = "test_input_required_result_list_roots";
/// `test_input_required_result_request_state`: asks `confirm` with a `requestState`, then
/// answers `state-ok: ok=<bool>` once the state verifies.
pub const REQUEST_STATE: &str = "test_input_required_result_request_state";
/// `test_input_required_result_multiple_inputs`: asks `user_name`, `greeting` (sampling) and
/// `client_roots` at once, with a `requestState`, then summarises the three answers.
pub const MULTIPLE_INPUTS: &str = "test_input_required_result_multiple_inputs";
/// `test_input_required_result_multi_round`: asks `step1` (a name), then `step2` (a colour)
/// with a new `requestState` carrying the name, then answers `<name> likes <colour>`.
pub const MULTI_ROUND: &str = "test_input_required_result_multi_round";
/// `test_input_required_result_tampered_state`: as `..._request_state`; the scenario alters
/// the state to see it refused.
pub const TAMPERED_STATE: &str = "test_input_required_result_tampered_state";
/// `test_input_required_result_capabilities`: asks only for what the request's capabilities
/// allow (sampling, elicitation, roots), then lists the keys it got.
pub const CAPABILITIES: &str = "test_input_required_result_capabilities";
/// `test_missing_capability`: needs sampling; `-32021` when the request did not declare it,
/// otherwise as `test_input_required_result_sampling`.
pub const MISSING_CAPABILITY: &str = "test_missing_capability";
/// `test_streaming_elicitation`: needs elicitation; asks it as an input request (nothing but
/// the result on the response stream), otherwise as `test_input_required_result_elicitation`.
pub const STREAMING_ELICITATION: &str = "test_streaming_elicitation";
/// The prompt whose `prompts/get` asks `user_context` (elicitation) before it answers.
pub const PROMPT: &str = "test_input_required_result_prompt";

/// The tools of this module, in list order.
pub const TOOLS: &[&str] = &[
    ELICITATION,
    SAMPLING,
    LIST_ROOTS,
    REQUEST_STATE,
    MULTIPLE_INPUTS,
    MULTI_ROUND,
    TAMPERED_STATE,
    CAPABILITIES,
    MISSING_CAPABILITY,
    STREAMING_ELICITATION,
];

/// How long a sealed `requestState` stays valid.
pub const STATE_TTL: Duration = Duration::from_secs(600);

/// Whether `name` is one of this module's tools.
pub fn is_tool(name: &str) -> bool {
    TOOLS.contains(&name)
}

/// The tool definitions (no arguments; each description says what it asks).
pub fn tools() -> Vec<Tool> {
    let no_args = || {
        let mut schema = JsonObject::new();
        schema.insert("type".into(), json!("object"));
        schema.insert("properties".into(), json!({}));
        Arc::new(schema)
    };
    [
        (
            ELICITATION,
            "Asks the user's name (input_required, elicitation).",
        ),
        (
            SAMPLING,
            "Asks an LLM completion (input_required, sampling).",
        ),
        (
            LIST_ROOTS,
            "Asks the client's roots (input_required, roots/list).",
        ),
        (
            REQUEST_STATE,
            "Asks a confirmation with a requestState it verifies.",
        ),
        (
            MULTIPLE_INPUTS,
            "Asks elicitation, sampling and roots/list in one round.",
        ),
        (
            MULTI_ROUND,
            "Asks a name, then a colour: two rounds, two requestStates.",
        ),
        (
            TAMPERED_STATE,
            "Asks a confirmation; refuses an altered requestState.",
        ),
        (
            CAPABILITIES,
            "Asks only what the request's client capabilities allow.",
        ),
        (
            MISSING_CAPABILITY,
            "Needs sampling: -32021 when it was not declared.",
        ),
        (
            STREAMING_ELICITATION,
            "Needs elicitation, asked as an input request.",
        ),
    ]
    .into_iter()
    .map(|(name, description)| Tool::new(name, description, no_args()))
    .collect()
}

/// The prompt definition.
pub fn prompt() -> Prompt {
    Prompt::new(
        PROMPT,
        Some("A prompt that asks the user for context (input_required) first."),
        None,
    )
}

/// What one round of a stateful tool remembers (sealed into `requestState`).
#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// 1 for the first round asked, 2 for the second (`multi_round` only).
    round: u8,
    /// The name `multi_round` was told in its first round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

/// The capability an input request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Elicitation,
    Sampling,
    Roots,
}

impl Needs {
    fn declared(self, caps: Option<&ClientCapabilities>) -> bool {
        caps.is_some_and(|caps| match self {
            Self::Elicitation => caps.elicitation.is_some(),
            Self::Sampling => caps.sampling.is_some(),
            Self::Roots => caps.roots.is_some(),
        })
    }

    fn key(self) -> &'static str {
        match self {
            Self::Elicitation => "elicitation",
            Self::Sampling => "sampling",
            Self::Roots => "roots",
        }
    }
}

/// One input request with the key it is asked under.
struct Ask {
    key: &'static str,
    needs: Needs,
    request: InputRequest,
}

/// An `elicitation/create` form asking for the string or boolean fields `fields`.
fn elicit(key: &'static str, message: &str, fields: &[(&str, &str)]) -> Result<Ask, ErrorData> {
    let properties: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(name, kind)| ((*name).to_owned(), json!({"type": kind})))
        .collect();
    let required: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    let schema = serde_json::from_value(
        json!({"type": "object", "properties": properties, "required": required}),
    )
    .map_err(|e| ErrorData::internal_error(format!("elicitation schema: {e}"), None))?;
    Ok(Ask {
        key,
        needs: Needs::Elicitation,
        request: InputRequest::Elicitation(ElicitRequest::new(
            ElicitRequestParams::FormElicitationParams {
                meta: None,
                message: message.to_owned(),
                requested_schema: schema,
            },
        )),
    })
}

/// A `sampling/createMessage` of one user message.
fn sample(key: &'static str, text: &str, max_tokens: u32) -> Ask {
    Ask {
        key,
        needs: Needs::Sampling,
        request: InputRequest::CreateMessage(CreateMessageRequest::new(
            CreateMessageRequestParams::new(vec![SamplingMessage::user_text(text)], max_tokens),
        )),
    }
}

/// A `roots/list`.
fn roots(key: &'static str) -> Ask {
    Ask {
        key,
        needs: Needs::Roots,
        request: InputRequest::ListRoots(ListRootsRequest::default()),
    }
}

/// `-32021` naming the capabilities `asks` need and `caps` lacks, if any.
fn check_capabilities(asks: &[Ask], caps: Option<&ClientCapabilities>) -> Result<(), ErrorData> {
    let mut missing = serde_json::Map::new();
    for ask in asks {
        if !ask.needs.declared(caps) {
            missing.insert(ask.needs.key().to_owned(), json!({}));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let required: ClientCapabilities = serde_json::from_value(Value::Object(missing))
        .map_err(|e| ErrorData::internal_error(format!("capabilities: {e}"), None))?;
    Err(ErrorData::missing_required_client_capability(required))
}

/// The answer under `key`, decoded as `T`: `None` when absent, `-32602` when malformed.
fn answer<T: DeserializeOwned>(
    responses: Option<&InputResponses>,
    key: &str,
) -> Result<Option<T>, ErrorData> {
    let Some(value) = responses.and_then(|r| r.get(key)) else {
        return Ok(None);
    };
    T::deserialize(value).map(Some).map_err(|e| {
        ErrorData::invalid_params(format!("inputResponses.{key} is malformed: {e}"), None)
    })
}

/// The text of an accepted elicitation's string field `field` (`None` when the user declined
/// or cancelled, or left it out).
fn accepted_field(result: &ElicitResult, field: &str) -> Option<String> {
    (result.action == ElicitationAction::Accept)
        .then(|| result.content.as_ref()?.get(field).map(display))
        .flatten()
}

/// A JSON value as text: strings without quotes.
fn display(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// The text of a sampling answer (empty when it is not text).
fn sampled_text(result: &CreateMessageResult) -> String {
    result
        .message
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default()
}

/// The URIs of a `roots/list` answer, comma-separated.
fn root_uris(result: &ListRootsResult) -> String {
    result
        .roots
        .iter()
        .map(|r| r.uri.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A complete tool result of one text item.
fn done(text: impl Into<String>) -> CallToolResponse {
    CallToolResult::success(vec![ContentBlock::text(text)]).into()
}

/// The multi-round-trip tools, with the key that seals their `requestState`.
#[derive(Debug)]
pub struct Mrtr {
    codec: RequestStateCodec,
}

impl Default for Mrtr {
    fn default() -> Self {
        Self::new()
    }
}

impl Mrtr {
    /// Tools whose `requestState` is sealed with a random 32-byte key of this process: a
    /// state from another fixture process (or a restarted one) does not verify.
    #[must_use]
    pub fn new() -> Self {
        let key: [u8; RequestStateCodec::MIN_KEY_LENGTH] = rand::random();
        Self {
            // The key has exactly the minimum length `try_new` checks for.
            codec: RequestStateCodec::new_unchecked(key.to_vec()),
        }
    }

    /// `state` sealed for `tool` (only `tool` opens it), valid for [`STATE_TTL`].
    fn seal(&self, tool: &str, state: &State) -> Result<String, ErrorData> {
        let options = SealOptions::new()
            .associated_data(tool.as_bytes())
            .ttl(STATE_TTL);
        self.codec
            .seal_json_with(state, &options)
            .map_err(|e| ErrorData::internal_error(format!("sealing requestState: {e}"), None))
    }

    /// The state `sealed` holds, if it was sealed for `tool` by this process and has not
    /// expired.
    ///
    /// # Errors
    ///
    /// `-32602` naming why it was refused (integrity, expiry, format).
    fn open(&self, tool: &str, sealed: &str) -> Result<State, ErrorData> {
        self.codec
            .open_json_with(sealed, tool.as_bytes())
            .map_err(|e| ErrorData::invalid_params(format!("requestState refused: {e}"), None))
    }

    /// An [`InputRequiredResult`] asking `asks`, with `state` sealed for `tool` if given.
    fn ask(
        &self,
        tool: &str,
        asks: Vec<Ask>,
        state: Option<&State>,
    ) -> Result<InputRequiredResult, ErrorData> {
        let requests: InputRequests = asks
            .into_iter()
            .map(|ask| (ask.key.to_owned(), ask.request))
            .collect();
        let sealed = state.map(|s| self.seal(tool, s)).transpose()?;
        Ok(InputRequiredResult::new(Some(requests), sealed))
    }

    /// Runs one of [`TOOLS`] for one round of `request`.
    ///
    /// # Errors
    ///
    /// `-32021` for a capability the request did not declare, `-32602` for a malformed
    /// answer or a refused `requestState`, `-32602` for a name not in [`TOOLS`].
    pub fn call_tool(
        &self,
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.as_ref();
        let responses = request.input_responses.as_ref();
        let caps = context.client_capabilities();
        let caps = caps.as_ref();
        match name {
            ELICITATION | STREAMING_ELICITATION => {
                let asks = vec![elicit(
                    "user_name",
                    "What is your name?",
                    &[("name", "string")],
                )?];
                check_capabilities(&asks, caps)?;
                match answer::<ElicitResult>(responses, "user_name")? {
                    None => Ok(self.ask(name, asks, None)?.into()),
                    Some(result) => Ok(match accepted_field(&result, "name") {
                        Some(name) => done(format!("Hello, {name}!")),
                        None => done(format!("No name given (action {:?}).", result.action)),
                    }),
                }
            }
            SAMPLING | MISSING_CAPABILITY => {
                let asks = vec![sample(
                    "capital_question",
                    "What is the capital of France?",
                    100,
                )];
                check_capabilities(&asks, caps)?;
                match answer::<CreateMessageResult>(responses, "capital_question")? {
                    None => Ok(self.ask(name, asks, None)?.into()),
                    Some(result) => Ok(done(format!("LLM response: {}", sampled_text(&result)))),
                }
            }
            LIST_ROOTS => {
                let asks = vec![roots("client_roots")];
                check_capabilities(&asks, caps)?;
                match answer::<ListRootsResult>(responses, "client_roots")? {
                    None => Ok(self.ask(name, asks, None)?.into()),
                    Some(result) => Ok(done(format!("Roots: {}", root_uris(&result)))),
                }
            }
            REQUEST_STATE | TAMPERED_STATE => {
                let asks = vec![elicit("confirm", "Please confirm", &[("ok", "boolean")])?];
                check_capabilities(&asks, caps)?;
                let first = State {
                    round: 1,
                    name: None,
                };
                let Some(sealed) = request.request_state.as_deref() else {
                    return Ok(self.ask(name, asks, Some(&first))?.into());
                };
                self.open(name, sealed)?;
                match answer::<ElicitResult>(responses, "confirm")? {
                    None => Ok(self.ask(name, asks, Some(&first))?.into()),
                    Some(result) => {
                        let ok = accepted_field(&result, "ok").unwrap_or_else(|| "none".into());
                        Ok(done(format!("state-ok: ok={ok}")))
                    }
                }
            }
            MULTIPLE_INPUTS => self.multiple_inputs(request, caps),
            MULTI_ROUND => self.multi_round(request, caps),
            CAPABILITIES => {
                let asks: Vec<Ask> = [
                    elicit("user_name", "What is your name?", &[("name", "string")])?,
                    sample("greeting", "Generate a greeting", 50),
                    roots("client_roots"),
                ]
                .into_iter()
                .filter(|ask| ask.needs.declared(caps))
                .collect();
                if asks.is_empty() {
                    return Ok(CallToolResult::error(vec![ContentBlock::text(
                        "the request declares none of sampling, elicitation and roots: \
                         nothing to ask",
                    )])
                    .into());
                }
                let keys: Vec<&str> = asks.iter().map(|a| a.key).collect();
                if keys
                    .iter()
                    .all(|k| responses.is_some_and(|r| r.contains_key(*k)))
                {
                    return Ok(done(format!("received: {}", keys.join(", "))));
                }
                Ok(self.ask(name, asks, None)?.into())
            }
            unknown => Err(ErrorData::invalid_params(
                format!("unknown tool: {unknown}"),
                None,
            )),
        }
    }

    /// `test_input_required_result_multiple_inputs`: three requests in one round, asked
    /// again (all of them) until every answer is there with a state that verifies.
    fn multiple_inputs(
        &self,
        request: &CallToolRequestParams,
        caps: Option<&ClientCapabilities>,
    ) -> Result<CallToolResponse, ErrorData> {
        let asks = vec![
            elicit("user_name", "What is your name?", &[("name", "string")])?,
            sample("greeting", "Generate a greeting", 50),
            roots("client_roots"),
        ];
        check_capabilities(&asks, caps)?;
        let first = State {
            round: 1,
            name: None,
        };
        let Some(sealed) = request.request_state.as_deref() else {
            return Ok(self.ask(MULTIPLE_INPUTS, asks, Some(&first))?.into());
        };
        self.open(MULTIPLE_INPUTS, sealed)?;
        let responses = request.input_responses.as_ref();
        let name = answer::<ElicitResult>(responses, "user_name")?;
        let greeting = answer::<CreateMessageResult>(responses, "greeting")?;
        let roots = answer::<ListRootsResult>(responses, "client_roots")?;
        match (name, greeting, roots) {
            (Some(name), Some(greeting), Some(roots)) => Ok(done(format!(
                "name={}, greeting={}, roots={}",
                accepted_field(&name, "name").unwrap_or_default(),
                sampled_text(&greeting),
                root_uris(&roots)
            ))),
            _ => Ok(self.ask(MULTIPLE_INPUTS, asks, Some(&first))?.into()),
        }
    }

    /// `test_input_required_result_multi_round`: a name, then a colour, each round with its
    /// own sealed state (the second carries the name).
    fn multi_round(
        &self,
        request: &CallToolRequestParams,
        caps: Option<&ClientCapabilities>,
    ) -> Result<CallToolResponse, ErrorData> {
        let step1 = || elicit("step1", "Step 1: What is your name?", &[("name", "string")]);
        let step2 = || {
            elicit(
                "step2",
                "Step 2: What is your favorite color?",
                &[("color", "string")],
            )
        };
        check_capabilities(&[step1()?], caps)?;
        let responses = request.input_responses.as_ref();
        let first = State {
            round: 1,
            name: None,
        };
        let Some(sealed) = request.request_state.as_deref() else {
            return Ok(self.ask(MULTI_ROUND, vec![step1()?], Some(&first))?.into());
        };
        let state = self.open(MULTI_ROUND, sealed)?;
        match state.round {
            1 => match answer::<ElicitResult>(responses, "step1")? {
                None => Ok(self.ask(MULTI_ROUND, vec![step1()?], Some(&first))?.into()),
                Some(result) => {
                    let second = State {
                        round: 2,
                        name: Some(accepted_field(&result, "name").unwrap_or_default()),
                    };
                    Ok(self.ask(MULTI_ROUND, vec![step2()?], Some(&second))?.into())
                }
            },
            _ => match answer::<ElicitResult>(responses, "step2")? {
                None => Ok(self.ask(MULTI_ROUND, vec![step2()?], Some(&state))?.into()),
                Some(result) => Ok(done(format!(
                    "{} likes {}",
                    state.name.unwrap_or_default(),
                    accepted_field(&result, "color").unwrap_or_default()
                ))),
            },
        }
    }

    /// `prompts/get` of [`PROMPT`]: asks `user_context`, then one user message with it.
    ///
    /// # Errors
    ///
    /// `-32021` without the elicitation capability, `-32602` for a malformed answer.
    pub fn get_prompt(
        &self,
        request: &GetPromptRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let asks = vec![elicit(
            "user_context",
            "What context should the prompt use?",
            &[("context", "string")],
        )?];
        check_capabilities(&asks, context.client_capabilities().as_ref())?;
        match answer::<ElicitResult>(request.input_responses.as_ref(), "user_context")? {
            None => Ok(self.ask(PROMPT, asks, None)?.into()),
            Some(result) => {
                let context = accepted_field(&result, "context").unwrap_or_default();
                let message =
                    PromptMessage::new_text(Role::User, format!("Use this context: {context}"));
                Ok(GetPromptResult::new(vec![message])
                    .with_description("A prompt built from the context the user gave")
                    .into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_tool_is_defined() {
        let names: Vec<_> = tools().into_iter().map(|t| t.name.to_string()).collect();
        assert_eq!(names, TOOLS);
    }

    #[test]
    fn state_opens_only_for_its_tool_and_unaltered() {
        let mrtr = Mrtr::new();
        let sealed = mrtr
            .seal(
                MULTI_ROUND,
                &State {
                    round: 2,
                    name: Some("Alice".into()),
                },
            )
            .unwrap();
        let state = mrtr.open(MULTI_ROUND, &sealed).unwrap();
        assert_eq!((state.round, state.name.as_deref()), (2, Some("Alice")));
        assert!(mrtr.open(REQUEST_STATE, &sealed).is_err());
        assert!(
            mrtr.open(MULTI_ROUND, &format!("{sealed}-TAMPERED"))
                .is_err()
        );
        assert!(Mrtr::new().open(MULTI_ROUND, &sealed).is_err());
    }

    #[test]
    fn missing_capabilities_are_named() {
        let asks = vec![sample("k", "t", 1), roots("r")];
        let caps: ClientCapabilities = serde_json::from_value(json!({"sampling": {}})).unwrap();
        let err = check_capabilities(&asks, Some(&caps)).unwrap_err();
        assert_eq!(err.code.0, -32021);
        let data = serde_json::to_value(&err.data).unwrap();
        assert_eq!(data["requiredCapabilities"], json!({"roots": {}}));
        assert!(check_capabilities(&asks[..1], Some(&caps)).is_ok());
    }

    #[test]
    fn malformed_answers_are_invalid_params() {
        let responses: InputResponses = [("k".to_owned(), json!(12345))].into();
        let err = answer::<ElicitResult>(Some(&responses), "k").unwrap_err();
        assert_eq!(err.code.0, -32602);
        assert!(
            answer::<ElicitResult>(Some(&responses), "other")
                .unwrap()
                .is_none()
        );
    }
}
