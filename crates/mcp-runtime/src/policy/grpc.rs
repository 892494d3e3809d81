//! The Core SPI over gRPC on the core's Unix socket (tonic, HTTP/2, authority `localhost`,
//! messages up to 65 MiB both ways). The channel connects lazily and reconnects by itself; a
//! failed call is [`CoreUnavailable`] (fail closed).

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use hyper_util::rt::TokioIo;
use mcp_runtime_core::{AuthContext, HookCall, HookDecision, HookPoint, TeamScope};
use mcp_runtime_proto::mcp::core::v1 as pb;
use mcp_runtime_proto::mcp::runtime::v1 as rt;
use pb::auth_policy_service_client::AuthPolicyServiceClient;
use pb::observability_service_client::ObservabilityServiceClient;
use pb::plugin_service_client::PluginServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::cache::Revocation;
use super::{
    CallerQuery, CoreUnavailable, Denial, PolicyConfig, Resolution, ResolveAnswer, WatchEvent,
    WatchStream,
};

/// Largest message either way: 64 MiB of payload plus 1 MiB of envelope.
const MAX_MESSAGE_BYTES: usize = 65 * 1024 * 1024;

/// A client of the core's gRPC socket.
#[derive(Debug, Clone)]
pub(crate) struct GrpcCore {
    auth: AuthPolicyServiceClient<Channel>,
    plugins: PluginServiceClient<Channel>,
    records: ObservabilityServiceClient<Channel>,
}

/// `message` with `traceparent` in its metadata (left out when empty or not a W3C
/// traceparent).
fn traced<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if mcp_runtime_core::runtime::trace_id_of(traceparent).is_some()
        && let Ok(v) = tonic::metadata::MetadataValue::try_from(traceparent)
    {
        req.metadata_mut().insert("traceparent", v);
    }
    req
}

fn unavailable(s: &tonic::Status) -> CoreUnavailable {
    CoreUnavailable(format!("{:?}: {}", s.code(), s.message()))
}

impl GrpcCore {
    /// A lazily connecting client of the socket in `config`.
    pub(crate) fn new(config: &PolicyConfig) -> Self {
        let path: Arc<PathBuf> = Arc::new(config.socket.clone());
        let channel =
            Endpoint::from_static("http://localhost")
                .connect_timeout(config.connect_timeout)
                // HTTP/2 pings: a stopped core that keeps its socket open breaks the watch.
                .http2_keep_alive_interval(std::time::Duration::from_secs(10))
                .keep_alive_timeout(std::time::Duration::from_secs(5))
                .keep_alive_while_idle(true)
                .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    let path = Arc::clone(&path);
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(&*path).await?))
                    }
                }));
        Self {
            auth: AuthPolicyServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            plugins: PluginServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            records: ObservabilityServiceClient::new(channel)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    pub(crate) async fn resolve(&self, q: &CallerQuery) -> Result<ResolveAnswer, CoreUnavailable> {
        let out = self
            .auth
            .clone()
            .resolve_caller(traced(
                pb::ResolveCallerRequest {
                    authorization: q.authorization.clone(),
                    client_address: q.client_address.clone(),
                    server_id: q.server_id.clone(),
                    request_id: q.request_id.clone(),
                    traceparent: q.traceparent.clone(),
                },
                &q.traceparent,
            ))
            .await
            .map_err(|s| unavailable(&s))?
            .into_inner();
        let resolution = match out.outcome {
            Some(pb::resolve_caller_response::Outcome::Caller(c)) => {
                Resolution::Allowed(Arc::new(from_proto(c)?))
            }
            Some(pb::resolve_caller_response::Outcome::Denial(d)) => Resolution::Denied(Denial {
                http_status: u16::try_from(d.http_status).unwrap_or(401),
                www_authenticate: d.www_authenticate,
                reason: d.reason,
            }),
            None => {
                return Err(CoreUnavailable(
                    "ResolveCaller answered neither caller nor denial".to_owned(),
                ));
            }
        };
        Ok(ResolveAnswer {
            resolution,
            cache_max_age_ms: out.cache_max_age_ms,
            generation: out.generation,
        })
    }

    pub(crate) async fn invoke_hook(
        &self,
        call: &HookCall<'_>,
        traceparent: &str,
    ) -> Result<HookDecision, CoreUnavailable> {
        let out = self
            .plugins
            .clone()
            .invoke_hook(traced(
                pb::InvokeHookRequest {
                    point: point(call.point).into(),
                    name: call.name.to_owned(),
                    method: call.method.to_owned(),
                    caller: Some(to_proto(call.caller)),
                    server_id: call.server_id.unwrap_or_default().to_owned(),
                    session_id: call.session_id.to_owned(),
                    request_id: call.request_id.unwrap_or_default().to_owned(),
                    payload: call.payload.clone(),
                },
                traceparent,
            ))
            .await
            .map_err(|s| unavailable(&s))?
            .into_inner();
        match out.decision {
            Some(pb::invoke_hook_response::Decision::Proceed(p)) => Ok(HookDecision::Proceed(
                (!p.payload.is_empty()).then_some(p.payload),
            )),
            Some(pb::invoke_hook_response::Decision::Deny(d)) => Ok(HookDecision::Deny {
                code: i64::from(d.code),
                message: d.message,
            }),
            None => Err(CoreUnavailable(
                "InvokeHook answered neither proceed nor deny".to_owned(),
            )),
        }
    }

    pub(crate) async fn record_calls(
        &self,
        records: Vec<super::records::Record>,
        dropped: u64,
        traceparent: &str,
    ) -> Result<(), CoreUnavailable> {
        let records = records
            .into_iter()
            .map(|r| pb::CallRecord {
                subject_email: r.subject_email,
                server_id: r.server_id,
                method: r.method,
                name: r.name,
                http_status: r.http_status,
                jsonrpc_code: r.jsonrpc_code,
                duration_us: r.duration_us,
                request_id: r.request_id,
                started_at_unix_us: r.started_at_unix_us,
            })
            .collect();
        self.records
            .clone()
            .record_calls(traced(
                pb::RecordCallsRequest { records, dropped },
                traceparent,
            ))
            .await
            .map_err(|s| unavailable(&s))?;
        Ok(())
    }

    pub(crate) async fn watch(&self, watcher: &str) -> Result<WatchStream, CoreUnavailable> {
        let stream = self
            .auth
            .clone()
            .watch_policy(pb::WatchPolicyRequest {
                watcher: watcher.to_owned(),
            })
            .await
            .map_err(|s| unavailable(&s))?
            .into_inner();
        Ok(stream
            .map(|m| m.map_err(|s| unavailable(&s)).map(event))
            .boxed())
    }
}

fn point(p: HookPoint) -> pb::HookPoint {
    match p {
        HookPoint::PreInvoke => pb::HookPoint::PreInvoke,
        HookPoint::PostInvoke => pb::HookPoint::PostInvoke,
        HookPoint::PostFetch => pb::HookPoint::PostFetch,
    }
}

fn event(m: pb::WatchPolicyResponse) -> WatchEvent {
    use pb::revocation::Target;
    use pb::watch_policy_response::Change;
    let generation = m.generation;
    match m.change {
        Some(Change::Snapshot(s)) => WatchEvent::Snapshot {
            generation: generation.max(s.generation),
            hooks: s
                .hooks
                .into_iter()
                .filter_map(|h| {
                    let p = match pb::HookPoint::try_from(h.point).ok()? {
                        pb::HookPoint::PreInvoke => HookPoint::PreInvoke,
                        pb::HookPoint::PostInvoke => HookPoint::PostInvoke,
                        pb::HookPoint::PostFetch => HookPoint::PostFetch,
                        pb::HookPoint::Unspecified => return None,
                    };
                    Some((p, h.name))
                })
                .collect(),
        },
        Some(Change::Revocation(r)) => match r.target {
            Some(Target::TokenSha256(t)) => WatchEvent::Revoked {
                generation,
                revocation: Revocation::TokenSha256(t),
            },
            Some(Target::SubjectEmail(s)) => WatchEvent::Revoked {
                generation,
                revocation: Revocation::Subject(s),
            },
            Some(Target::All(true)) => WatchEvent::Revoked {
                generation,
                revocation: Revocation::All,
            },
            Some(Target::All(false)) | None => WatchEvent::Other { generation },
        },
        None => WatchEvent::Other { generation },
    }
}

/// The core's AuthContext, as the runtime contract's proto carries it.
fn from_proto(a: rt::AuthContext) -> Result<AuthContext, CoreUnavailable> {
    crate::transport::grpc::auth_from_proto(a)
        .map_err(|v| CoreUnavailable(format!("caller.team_scope: unknown value {v}")))
}

fn to_proto(a: &AuthContext) -> rt::AuthContext {
    let (team_scope, teams) = match &a.team_scope {
        TeamScope::Unrestricted => (rt::TeamScope::Unrestricted, Vec::new()),
        TeamScope::PublicOnly => (rt::TeamScope::PublicOnly, Vec::new()),
        TeamScope::Teams(t) => (rt::TeamScope::Teams, t.clone()),
    };
    rt::AuthContext {
        subject_email: a.subject_email.clone(),
        is_admin: a.is_admin,
        team_scope: team_scope.into(),
        teams,
        scopes: a.scopes.clone(),
        token_expires_at_unix_s: a.token_expires_at_unix_s,
        traceparent: a.traceparent.clone(),
        trace_id: a.trace_id.clone(),
    }
}
