//! The monitor owns the agent's view of health: it samples host resources, probes
//! services and runs checks every `health_interval`, and publishes an immutable
//! snapshot that the Status RPC, WatchStatus and the metrics endpoint read.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures_util::future::join_all;
use hoist_proto::v1::{AppStatus, CheckStatus, HostResources, ServiceStatus, StatusResponse};
use tokio::sync::watch;

use crate::{
    config::{App, Config},
    host::{checks, resources::Sampler, services},
};

/// One round of background sampling.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub sampled_at: Option<SystemTime>,
    pub resources: HostResources,
    /// Per app: services and checks as of `sampled_at`.
    pub apps: BTreeMap<String, AppHealth>,
}

#[derive(Debug, Default, Clone)]
pub struct AppHealth {
    pub services: Vec<ServiceStatus>,
    pub checks: Vec<CheckStatus>,
}

/// The release `deploy_to/current` points at, and its commit (from the release's
/// `REVISION` file), or empty strings before the first deploy.
pub fn current_release(app: &App) -> (String, String) {
    let current = app.deploy_to.join("current");
    let Ok(target) = std::fs::read_link(&current) else {
        return (String::new(), String::new());
    };
    let release = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let commit = crate::state::release::Layout::new(&app.deploy_to).revision(&release);
    (release, commit)
}

/// Whether `deploy_to/current` names a release, i.e. one was ever switched to here.
pub fn deployed(app: &App) -> bool {
    crate::state::release::Layout::new(&app.deploy_to)
        .current()
        .is_some()
}

/// Takes the first resource sample, so status answers carry real figures from the
/// start (checks follow in the first round of [`run`]).
pub async fn first_sample(config: &Config) -> (Sampler, Snapshot) {
    let thresholds = config.thresholds.clone();
    let (sampler, resources) = tokio::task::spawn_blocking(move || {
        let mut s = Sampler::new();
        let r = s.sample(&thresholds);
        (s, r)
    })
    .await
    .unwrap_or_else(|_| (Sampler::new(), HostResources::default()));
    let snapshot = Snapshot {
        sampled_at: Some(SystemTime::now()),
        resources,
        apps: BTreeMap::new(),
    };
    (sampler, snapshot)
}

/// Runs forever, publishing a snapshot after every round.
pub async fn run(
    config: watch::Receiver<Arc<Config>>,
    publish: watch::Sender<Arc<Snapshot>>,
    sampler: Sampler,
    recheck: Arc<tokio::sync::Notify>,
) {
    let mut sampler = Some(sampler);
    loop {
        let cfg = config.borrow().clone();
        let thresholds = cfg.thresholds.clone();
        let mut s = sampler.take().unwrap_or_default();
        let (s, resources) = tokio::task::spawn_blocking(move || {
            let r = s.sample(&thresholds);
            (s, r)
        })
        .await
        .unwrap_or_else(|_| (Sampler::new(), HostResources::default()));
        sampler = Some(s);
        let apps = join_all(cfg.apps.iter().map(|app| async move {
            let declared = app.all_services();
            // An app never deployed here has nothing to check yet: no failing check, no
            // warning every round, no alert (its status says "not deployed").
            let deployed = deployed(app);
            let app_checks = if deployed { app.checks.as_slice() } else { &[] };
            let (services, checks) = tokio::join!(
                join_all(declared.iter().map(services::probe)),
                join_all(app_checks.iter().map(|c| checks::run(app, c)))
            );
            for c in checks.iter().filter(|c| !c.ok) {
                tracing::warn!(app = %app.name, check = %c.name, output = %c.output, "check failing");
            }
            (app.name.clone(), AppHealth { services, checks })
        }))
        .await
        .into_iter()
        .collect();
        publish.send_replace(Arc::new(Snapshot {
            sampled_at: Some(SystemTime::now()),
            resources,
            apps,
        }));
        // What bursts of calls since the last round (a thousand Status calls at once)
        // allocated and freed goes back to the host, not kept in malloc's free lists.
        crate::memory::trim();
        // Sleep until the next round, or until a job asks for fresh results (a finished
        // deploy should not leave the previous release's check results on show).
        tokio::select! {
            _ = tokio::time::sleep(cfg.agent.health_interval.max(Duration::from_millis(100))) => {}
            _ = recheck.notified() => {}
        }
    }
}

/// Builds a status answer: resources and checks from the last snapshot, current
/// release and service states read now.
pub async fn status(config: &Config, snapshot: &Snapshot, only_app: &str) -> StatusResponse {
    let apps = config
        .apps
        .iter()
        .filter(|a| only_app.is_empty() || a.name == only_app);
    let apps = join_all(apps.map(|app| async move {
        let (current_release, current_commit) = current_release(app);
        let services = join_all(app.all_services().iter().map(services::probe)).await;
        let checks = match snapshot.apps.get(&app.name) {
            Some(h) if h.checks.len() == app.checks.len() => h.checks.clone(),
            _ => app
                .checks
                .iter()
                .map(|c| CheckStatus {
                    name: c.name(),
                    kind: c.kind().into(),
                    output: if current_release.is_empty() {
                        "not deployed".into()
                    } else {
                        "not run yet".into()
                    },
                    monitor_only: !c.gate,
                    ..Default::default()
                })
                .collect(),
        };
        AppStatus {
            name: app.name.clone(),
            current_release,
            current_commit,
            services,
            checks,
            lock: None,
            running_job: String::new(),
        }
    }))
    .await;
    StatusResponse {
        version: crate::VERSION.into(),
        hostname: crate::hostname(),
        sampled_at: snapshot.sampled_at.map(Into::into),
        resources: Some(snapshot.resources.clone()),
        apps,
    }
}
