//! `completion/complete` routed by its `ref` to the upstream owning the prompt or the resource
//! template, under the caller's visibility. Two conformance fixtures (they implement
//! completion): one public, one of team alpha with the prefix `alpha_`.

use crate::sidecar::Sidecar;
use crate::support::*;
use mcp_fixture_server::SharedState;
use serde_json::{Value, json};

fn conformance_fixture() -> Fixture {
    Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        SharedState::new(0).with_conformance(),
    )
}

fn complete(reference: &Value, value: &str) -> bytes::Bytes {
    rpc(
        7,
        "completion/complete",
        json!({"ref": reference, "argument": {"name": "arg1", "value": value}}),
    )
}

fn values(r: &Reply) -> Vec<String> {
    let body = r.json();
    body["result"]["completion"]["values"]
        .as_array()
        .unwrap_or_else(|| panic!("no completion values: {body}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_reaches_the_upstream_of_the_prompt_or_template() {
    let (public, alpha) = (conformance_fixture(), conformance_fixture());
    let rt = Sidecar::start(&format!(
        "[[upstreams]]\nid = \"public\"\nurl = \"{}\"\n\n[[upstreams]]\nid = \"alpha\"\n\
         url = \"{}\"\nprefix = \"alpha_\"\nvisibility = \"team\"\nteam = \"alpha\"\n",
        public.url, alpha.url
    ))
    .await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&["alpha"]));
    let bob = auth("bob@example.com", false, Some(&[]));
    let (a, b) = (
        http.initialize(&alice, None).await,
        http.initialize(&bob, None).await,
    );
    let init = http
        .send(&Call::post(&alice, initialize_body()))
        .await
        .json();
    assert!(
        init["result"]["capabilities"]["completions"].is_object(),
        "{init}"
    );

    // The prefixed prompt's name is the upstream's again when it gets there: the fixture
    // completes only `test_prompt_with_arguments`, and answers nothing for another name.
    let prompt = json!({"type": "ref/prompt", "name": "alpha_test_prompt_with_arguments"});
    let r = http
        .send(&Call::post(&alice, complete(&prompt, "par")).session(&a))
        .await;
    assert_eq!(values(&r), ["paris", "park", "party"]);
    let own = json!({"type": "ref/prompt", "name": "test_prompt_with_arguments"});
    let r = http
        .send(&Call::post(&bob, complete(&own, "test")).session(&b))
        .await;
    assert_eq!(values(&r), ["test", "testing", "tested"]);
    let template = json!({"type": "ref/resource", "uri": "test://template/{id}/data"});
    let r = http
        .send(&Call::post(&bob, complete(&template, "pa")).session(&b))
        .await;
    assert_eq!(values(&r), ["paris", "park", "party"]);

    // A prompt the caller may not see is answered like one that does not exist.
    let r = http
        .send(&Call::post(&bob, complete(&prompt, "par")).session(&b))
        .await;
    let body = r.json();
    assert_eq!(body["error"]["code"], -32602, "{body}");
    assert_eq!(
        body["error"]["message"],
        "Unknown prompt: alpha_test_prompt_with_arguments"
    );

    // Params that are not a CompleteRequest's.
    for (params, message) in [
        (
            json!({"argument": {"name": "a", "value": ""}}),
            "`ref` must be an object",
        ),
        (
            json!({"ref": {"type": "ref/tool", "name": "x"}, "argument": {"name": "a", "value": ""}}),
            "`ref.type` must be \"ref/prompt\" or \"ref/resource\"",
        ),
        (
            json!({"ref": {"type": "ref/prompt"}, "argument": {"name": "a", "value": ""}}),
            "`ref.name` is required",
        ),
        (
            json!({"ref": {"type": "ref/prompt", "name": "x"}}),
            "`argument` must be an object",
        ),
    ] {
        let r = http
            .send(&Call::post(&bob, rpc(8, "completion/complete", params)).session(&b))
            .await;
        let body = r.json();
        assert_eq!(body["error"]["code"], -32602, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.ends_with(message)),
            "{body}"
        );
    }
}
