//! `[notify] webhooks`: Slack-compatible JSON (`{"text": ..., "attachments": [...]}`)
//! POSTed to every webhook (`http://` or `https://`, verified against the system's root
//! certificates) when a rollout starts, succeeds, fails, rolls hosts back or is
//! refused. A URL hoist cannot use (a bad port) is skipped with one message. Sending happens in the background with a short timeout: a dead or slow
//! webhook never fails or holds up a deploy; its error goes to stderr. Before the
//! command exits it waits (at most [`TIMEOUT`]) for messages still in flight, so the
//! last one is not lost.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{sync::Mutex, task::JoinSet};

use crate::{fleet::Notify, rollout::httpc};

/// Limit for one POST, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Start,
    Success,
    Failure,
    Rollback,
    Refusal,
}

impl Event {
    pub fn key(self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Success => "success",
            Event::Failure => "failure",
            Event::Rollback => "rollback",
            Event::Refusal => "refusal",
        }
    }

    /// Slack attachment colour.
    fn colour(self) -> &'static str {
        match self {
            Event::Start => "#439FE0",
            Event::Success => "good",
            Event::Failure => "danger",
            Event::Rollback | Event::Refusal => "warning",
        }
    }
}

/// What a message about a rollout says besides its headline: who ran it (the
/// operator's certificate name), the app, the ref and the commit it resolved to, the
/// hosts, how long it took, what failed first (a host's check or step, or a gate) and
/// the reason of a forced deploy. All of it is in the text, and repeated as fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub who: String,
    pub app: String,
    pub git_ref: Option<String>,
    pub commit: Option<String>,
    pub hosts: Vec<String>,
    pub duration_ms: Option<u64>,
    pub failed: Option<String>,
    pub forced: Option<String>,
}

impl Facts {
    /// `HEADLINE — by WHO; app APP; ref REF → COMMIT; hosts H1, H2; took 1m 5s;
    /// failed: WHAT; forced: REASON` (parts without a value left out).
    pub fn text(&self, headline: &str) -> String {
        let mut parts = Vec::new();
        if !self.who.is_empty() {
            parts.push(format!("by {}", self.who));
        }
        parts.push(format!("app {}", self.app));
        match (&self.git_ref, &self.commit) {
            (Some(r), Some(c)) => parts.push(format!("ref {r} → {c}")),
            (Some(r), None) => parts.push(format!("ref {r}")),
            (None, Some(c)) => parts.push(format!("commit {c}")),
            (None, None) => {}
        }
        if !self.hosts.is_empty() {
            parts.push(format!("hosts {}", self.hosts.join(", ")));
        }
        if let Some(ms) = self.duration_ms {
            parts.push(format!(
                "took {}",
                crate::output::render::human_duration(ms)
            ));
        }
        if let Some(failed) = &self.failed {
            parts.push(format!("failed: {failed}"));
        }
        if let Some(reason) = &self.forced {
            parts.push(format!("forced: {reason}"));
        }
        format!("{headline} — {}", parts.join("; "))
    }

    /// The same as attachment fields.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![("app", self.app.clone()), ("who", self.who.clone())];
        fields.push(("ref", self.git_ref.clone().unwrap_or_default()));
        fields.push(("commit", self.commit.clone().unwrap_or_default()));
        fields.push(("hosts", self.hosts.join(", ")));
        if let Some(ms) = self.duration_ms {
            fields.push(("duration", crate::output::render::human_duration(ms)));
        }
        fields.push(("failed", self.failed.clone().unwrap_or_default()));
        fields.push(("forced", self.forced.clone().unwrap_or_default()));
        fields
    }
}

/// The Slack-compatible body: `text` says it all; the attachment repeats it as fields.
pub fn payload(event: Event, text: &str, fields: &[(&str, String)]) -> Value {
    let mut all = vec![json!({"title": "event", "value": event.key(), "short": true})];
    all.extend(
        fields.iter().filter(|(_, v)| !v.is_empty()).map(
            |(title, value)| json!({"title": title, "value": value, "short": value.len() < 40}),
        ),
    );
    json!({
        "text": text,
        "attachments": [{
            "fallback": text,
            "color": event.colour(),
            "fields": all,
        }],
    })
}

/// Sends to the fleet's webhooks in the background.
pub struct Notifier {
    hooks: Vec<(String, Result<httpc::Url, httpc::HttpError>)>,
    pending: Mutex<JoinSet<()>>,
    warned: AtomicBool,
}

impl Notifier {
    pub fn new(notify: &Notify) -> Notifier {
        Notifier {
            hooks: notify
                .webhooks
                .iter()
                .map(|hook| (hook.to_string(), httpc::Url::parse(hook.url())))
                .collect(),
            pending: Mutex::new(JoinSet::new()),
            warned: AtomicBool::new(false),
        }
    }

    /// Posts `event` to every webhook without waiting for the answers.
    pub async fn send(&self, event: Event, text: &str, fields: &[(&str, String)]) {
        if self.hooks.is_empty() {
            return;
        }
        let body = payload(event, text, fields).to_string();
        let mut pending = self.pending.lock().await;
        for (name, url) in &self.hooks {
            match url {
                Ok(url) => {
                    let (name, url, body) = (name.clone(), url.clone(), body.clone());
                    pending.spawn(async move {
                        match httpc::post_json(&url, body, TIMEOUT).await {
                            Ok(r) if (200..300).contains(&r.status) => {}
                            Ok(r) => eprintln!(
                                "hoist: webhook {name} answered HTTP {} to the {} message: {}",
                                r.status,
                                event.key(),
                                crate::output::escape::one_line(
                                    &r.body.trim().chars().take(200).collect::<String>()
                                )
                            ),
                            Err(why) => eprintln!(
                                "hoist: webhook {name} missed the {} message: {why}",
                                event.key()
                            ),
                        }
                    });
                }
                Err(why) if !self.warned.load(Ordering::Relaxed) => {
                    eprintln!("hoist: webhook {name} skipped: {why}");
                }
                Err(_) => {}
            }
        }
        self.warned.store(true, Ordering::Relaxed);
    }

    /// Waits for messages in flight, at most [`TIMEOUT`] (each POST is bounded by it).
    pub async fn finish(&self) {
        let mut pending = self.pending.lock().await;
        let drain = async { while pending.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(TIMEOUT + Duration::from_millis(500), drain).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fleet::Webhook, rollout::httpc::tests::server};

    fn notify(urls: &[String]) -> Notify {
        let text = format!(
            "webhooks = [{}]",
            urls.iter()
                .map(|u| format!("{u:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        #[derive(serde::Deserialize)]
        struct Hooks {
            webhooks: Vec<Webhook>,
        }
        let hooks: Hooks = toml::from_str(&text).unwrap();
        Notify {
            webhooks: hooks.webhooks,
        }
    }

    #[test]
    fn messages_name_who_what_where_how_long_what_failed_and_why_forced() {
        let facts = Facts {
            who: "alice".into(),
            app: "shop".into(),
            git_ref: Some("v2.3".into()),
            commit: Some("a1b2c3d".into()),
            hosts: vec!["web-1".into(), "web-2".into()],
            duration_ms: Some(65_000),
            failed: Some("gate Error rate < 1%: 3.2% > 1%".into()),
            forced: Some("hotfix INC-42".into()),
        };
        assert_eq!(
            facts.text("hoist: deploy of shop v2.3 failed"),
            "hoist: deploy of shop v2.3 failed — by alice; app shop; ref v2.3 → a1b2c3d; hosts \
             web-1, web-2; took 1m05s; failed: gate Error rate < 1%: 3.2% > 1%; forced: hotfix INC-42"
        );
        let fields = facts.fields();
        assert!(fields.contains(&("forced", "hotfix INC-42".into())));
        assert!(fields.contains(&("commit", "a1b2c3d".into())));
        let plain = Facts {
            app: "shop".into(),
            ..Facts::default()
        };
        assert_eq!(plain.text("hoist: x"), "hoist: x — app shop");
    }

    #[tokio::test]
    async fn posts_to_live_hooks_and_shrugs_off_dead_ones() {
        let live = server(200, "ok").await;
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = format!("http://{}/hook", closed.local_addr().unwrap());
        let dead_tls = format!("https://{}/hook", closed.local_addr().unwrap());
        drop(closed);
        let notifier = Notifier::new(&notify(&[
            dead,
            format!("{}/services/T0/SECRET", live.url),
            dead_tls,
            "http://127.0.0.1:99999/services/T0/B0/SECRET".into(),
        ]));
        let started = std::time::Instant::now();
        notifier
            .send(
                Event::Success,
                "hoist: deploy of web main succeeded on 3 hosts",
                &[("app", "web".into()), ("hosts", "web-1, web-2".into())],
            )
            .await;
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "send waits for nobody"
        );
        notifier.finish().await;
        let requests = live.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert!(requests[0].starts_with("POST /services/T0/SECRET HTTP/1.1"));
        let body: Value =
            serde_json::from_str(requests[0].split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(
            body["text"],
            "hoist: deploy of web main succeeded on 3 hosts"
        );
        assert_eq!(body["attachments"][0]["color"], "good");
        assert_eq!(body["attachments"][0]["fields"][0]["value"], "success");
        assert_eq!(body["attachments"][0]["fields"][2]["value"], "web-1, web-2");
    }
}
