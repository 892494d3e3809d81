//! Visibility and session ownership from the AuthContext: two teams, admin, public-only, and a
//! session used by another subject. Three fixture upstreams: public, team alpha, team beta.

use crate::sidecar::Sidecar;
use crate::support::*;
use serde_json::{Value, json};

fn catalog(public: &str, alpha: &str, beta: &str) -> String {
    format!(
        r#"
[[upstreams]]
id = "public"
url = "{public}"

[[upstreams]]
id = "alpha"
url = "{alpha}"
prefix = "alpha_"
visibility = "team"
team = "alpha"

[[upstreams]]
id = "beta"
url = "{beta}"
prefix = "beta_"
visibility = "team"
team = "beta"
"#
    )
}

async fn tool_names(http: &Http, who: &Value, sid: &str) -> Vec<String> {
    let r = http
        .send(&Call::post(who, rpc(1, "tools/list", json!({}))).session(sid))
        .await;
    let mut names: Vec<String> = r.json()["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .filter(|n| n.ends_with("echo"))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_sees_public_plus_own_teams() {
    let (p, a, b) = (Fixture::start(), Fixture::start(), Fixture::start());
    let rt = Sidecar::start(&catalog(&p.url, &a.url, &b.url)).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&["alpha"]));
    let bob = auth("bob@example.com", false, Some(&["beta"]));
    let admin = auth("admin@example.com", true, None);
    let anyone = auth("anyone@example.com", false, Some(&[]));
    let admin_public_only = auth("admin2@example.com", true, Some(&[]));
    let nonadmin_unrestricted = auth("eve@example.com", false, None);
    let expect: [(&Value, &[&str]); 6] = [
        (&alice, &["alpha_echo", "echo"]),
        (&bob, &["beta_echo", "echo"]),
        (&admin, &["alpha_echo", "beta_echo", "echo"]),
        (&anyone, &["echo"]),
        (&admin_public_only, &["echo"]),
        (&nonadmin_unrestricted, &["echo"]),
    ];
    for (who, names) in expect {
        let sid = http.initialize(who, None).await;
        assert_eq!(tool_names(&http, who, &sid).await, names, "{who}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invisible_tool_is_answered_like_a_missing_one() {
    let (p, a, b) = (Fixture::start(), Fixture::start(), Fixture::start());
    let rt = Sidecar::start(&catalog(&p.url, &a.url, &b.url)).await;
    let http = Http::new(&rt.http);
    let bob = auth("bob@example.com", false, Some(&["beta"]));
    let sid = http.initialize(&bob, None).await;
    let call = |name: &str| {
        Call::post(
            &bob,
            rpc(
                7,
                "tools/call",
                json!({"name": name, "arguments": {"text": "x"}}),
            ),
        )
        .session(&sid)
    };
    let hidden = http.send(&call("alpha_echo")).await;
    let missing = http.send(&call("gamma_echo")).await;
    assert_eq!(hidden.status, missing.status);
    assert_eq!(hidden.error_code(), Some(-32602));
    let text = |r: &Reply| {
        String::from_utf8_lossy(&r.body)
            .replace("alpha_echo", "NAME")
            .replace("gamma_echo", "NAME")
    };
    assert_eq!(text(&hidden), text(&missing), "same answer, nothing leaked");
    let visible = http.send(&call("beta_echo")).await;
    assert_eq!(
        visible.json().pointer("/result/content/0/text"),
        Some(&json!("x"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_refuses_another_subject() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let mallory = auth("mallory@example.com", true, None);
    let sid = http.initialize(&alice, None).await;
    let r = http
        .send(&Call::post(&mallory, rpc(1, "tools/list", json!({}))).session(&sid))
        .await;
    assert_eq!((r.status, r.error_code()), (404, Some(-32001)));
    let unknown = http
        .send(
            &Call::post(&mallory, rpc(1, "tools/list", json!({})))
                .session("ffffffffffffffffffffffffffffffff"),
        )
        .await;
    assert_eq!(
        r.body, unknown.body,
        "a foreign session looks exactly like an unknown one"
    );
    let del = Call::bodyless("DELETE", &mallory, &sid);
    assert_eq!(
        http.send(&del).await.status,
        404,
        "another subject cannot end it"
    );
    let r = http
        .send(&Call::post(&alice, rpc(2, "ping", json!({}))).session(&sid))
        .await;
    assert_eq!(r.status, 200, "the owner's session survives");
}

/// The `key` field of every item of a `method` list, in the order listed.
async fn listed(
    http: &Http,
    who: &Value,
    sid: &str,
    method: &str,
    items: &str,
    key: &str,
) -> Vec<String> {
    let r = http
        .send(&Call::post(who, rpc(1, method, json!({}))).session(sid))
        .await;
    r.json()["result"][items]
        .as_array()
        .unwrap_or_else(|| panic!("{method}: {}", String::from_utf8_lossy(&r.body)))
        .iter()
        .map(|t| t[key].as_str().unwrap().to_owned())
        .collect()
}

/// One URI or URI template exposed by several upstreams is listed once for each caller, the
/// first upstream in catalog order the caller can see serving it, whichever upstream comes
/// first in the catalog (here a team upstream before the public one); tools and prompts keep
/// one entry per prefixed name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uri_or_template_of_several_upstreams_is_listed_once() {
    let (p, a, b) = (Fixture::start(), Fixture::start(), Fixture::start());
    let team_first = format!(
        "[[upstreams]]\nid = \"alpha\"\nurl = \"{}\"\nprefix = \"alpha_\"\nvisibility = \"team\"\nteam = \"alpha\"\n\n\
         [[upstreams]]\nid = \"public\"\nurl = \"{}\"\n",
        a.url, p.url
    );
    for cat in [catalog(&p.url, &a.url, &b.url), team_first] {
        let rt = Sidecar::start(&cat).await;
        let http = Http::new(&rt.http);
        let callers = [
            auth("alice@example.com", false, Some(&["alpha"])),
            auth("admin@example.com", true, None),
            auth("anyone@example.com", false, Some(&[])),
        ];
        for who in &callers {
            let sid = http.initialize(who, None).await;
            let templates = listed(
                &http,
                who,
                &sid,
                "resources/templates/list",
                "resourceTemplates",
                "uriTemplate",
            )
            .await;
            assert_eq!(templates, ["fixture://items/{id}"], "{who}");
            let resources = listed(&http, who, &sid, "resources/list", "resources", "uri").await;
            let mut unique = resources.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(resources.len(), unique.len(), "{who}: {resources:?}");
            assert!(
                resources.iter().any(|u| u == "fixture://readme"),
                "{who}: {resources:?}"
            );
            for (method, items) in [("tools/list", "tools"), ("prompts/list", "prompts")] {
                let names = listed(&http, who, &sid, method, items, "name").await;
                let mut unique = names.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(names.len(), unique.len(), "{who} {method}: {names:?}");
            }
            for uri in ["fixture://readme", "fixture://items/7"] {
                let r = http
                    .send(
                        &Call::post(who, rpc(2, "resources/read", json!({"uri": uri})))
                            .session(&sid),
                    )
                    .await;
                assert_eq!(
                    r.json().pointer("/result/contents/0/uri"),
                    Some(&json!(uri)),
                    "{who} reads {uri}: {}",
                    String::from_utf8_lossy(&r.body)
                );
            }
        }
    }
}
