//! The crash suite (issue 9, SPEC §4 recovery): hoistd is killed with SIGKILL at a
//! random point of each of N deploys, restarted on the same state, and after every kill
//! `current` must name a complete release, every state file must parse, the killed job
//! must be in `hoist log` with a final result (`interrupted` unless it had finished),
//! no lock may be left, no process of the killed job may still run, the next deploy
//! must succeed (and tell of the interrupted job), and no temp file of the dead agent
//! may be left behind. docs/RELIABILITY.md records how a run of 100 is made and its
//! figures.
//!
//! The deploys fetch over a slow git HTTP server (each request answered after a random
//! delay) and build with a hook that sleeps, so kills land in every step. Each kill is
//! either right after a random event of the job's stream or after a random delay within
//! the deploy's measured duration, chosen by a seeded RNG.
//!
//! - `HOIST_CRASH_RUNS` (default 6): deploys killed. The recorded run is 100.
//! - `HOIST_CRASH_SEED`: replay a run's choices (printed at the start and in a failure).
//! - `HOIST_CRASH_BUDGET` (seconds, default 300): the suite stops and fails past it.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hoist_proto::v1::{
    DeployRequest, JobEvent, JobResult, StatusRequest, agent_client::AgentClient, job_event::Kind,
};
use hoist_tests::{
    cli::{self, Background},
    e2e,
    harness::{Agent, AgentBuilder, Pki, Who},
    jobs::{output, result},
    services::{git::AppRepo, git_http::GitHttp},
};
use nix::sys::signal::Signal;
use tonic::transport::Channel;

const DEFAULT_RUNS: usize = 6;
const DEFAULT_BUDGET: Duration = Duration::from_secs(300);
/// Longest one deploy's stream may take before the test gives up on it.
const JOB_LIMIT: Duration = Duration::from_secs(60);
/// Longest a `hoist` query may take.
const CLI_LIMIT: Duration = Duration::from_secs(30);

// === the RNG ===

/// SplitMix64: tiny, seedable, good enough to pick kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
    )
}

fn seed() -> u64 {
    env_number("HOIST_CRASH_SEED").unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Rng(now.as_nanos() as u64 ^ u64::from(std::process::id())).next() >> 16
    })
}

// === the app ===

fn app_toml(repo: &str, deploy_to: &Path, step_timeout: &str) -> String {
    format!(
        r#"
[[app]]
name = "web"
repo = "{repo}"
deploy_to = "{deploy_to}"
keep_releases = 3
step_timeout = "{step_timeout}"

[app.steps]
build = ["echo build of $HOIST_RELEASE", "sleep 0.4", "echo built $HOIST_RELEASE"]
after_switch = "echo switched to $HOIST_RELEASE"

[[app.checks]]
kind = "command"
name = "version"
command = "test -s VERSION"
retries = 1
"#,
        deploy_to = deploy_to.display(),
    )
}

/// A deploy_to parent that hooks can traverse.
fn deploy_root() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Rewrites the agent's config to listen on the port it has now, so a restart after a
/// kill comes back at the same address (as under systemd) and the fleet file and any
/// `hoist` following a job still reach it.
fn pin_port(agent: &Agent) {
    let text = std::fs::read_to_string(&agent.config).unwrap();
    let pinned = text.replacen(
        "\nlisten = \"127.0.0.1:0\"",
        &format!("\nlisten = \"{}\"", agent.grpc),
        1,
    );
    assert_ne!(text, pinned, "the config has no `listen = \"127.0.0.1:0\"`");
    std::fs::write(&agent.config, pinned).unwrap();
}

fn fleet_file(dir: &Path, pki: &Pki, agent: &Agent) -> String {
    let path = dir.join("fleet.toml");
    std::fs::write(
        &path,
        format!(
            "{}{}",
            pki.fleet_tls(Who::Deployer),
            agent.fleet_entry("web-1")
        ),
    )
    .unwrap();
    path.display().to_string()
}

async fn deploy_stream(
    client: &mut AgentClient<Channel>,
    id: &str,
) -> Result<tonic::Streaming<JobEvent>, tonic::Status> {
    client
        .deploy(DeployRequest {
            app: "web".into(),
            r#ref: "main".into(),
            deploy_id: id.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// Every event until the job finishes, bounded by [`JOB_LIMIT`].
async fn drain(stream: &mut tonic::Streaming<JobEvent>) -> Result<Vec<JobEvent>, String> {
    let mut events = Vec::new();
    let read = async {
        loop {
            match stream.message().await {
                Ok(Some(event)) => events.push(event),
                Ok(None) => return Ok(()),
                Err(status) => return Err(format!("stream broke: {status}")),
            }
        }
    };
    match tokio::time::timeout(JOB_LIMIT, read).await {
        Ok(Ok(())) => Ok(events),
        Ok(Err(e)) => Err(format!("{e} after {} events", events.len())),
        Err(_) => Err(format!(
            "no end within {JOB_LIMIT:?} ({} events)",
            events.len()
        )),
    }
}

fn describe_event(event: &JobEvent) -> String {
    match &event.kind {
        Some(Kind::Started(_)) => "started".into(),
        Some(Kind::StepStarted(s)) => format!("step_started {}", s.step),
        Some(Kind::StepFinished(s)) => format!("step_finished {}", s.step),
        Some(Kind::Output(o)) => format!("output of {}", o.step),
        Some(Kind::Notice(_)) => "notice".into(),
        Some(Kind::Omitted(_)) => "omitted".into(),
        Some(Kind::Finished(f)) => format!("finished {:?}", f.result()),
        None => "empty".into(),
    }
}

// === what is checked after each kill ===

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Problem {
    BrokenCurrent,
    CorruptState,
    UnreportedJob,
    StaleLock,
    FailedNextDeploy,
    NotToldByNextDeploy,
    Leftover,
    OrphanProcess,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Problem::BrokenCurrent => "broken current",
            Problem::CorruptState => "corrupt journal/state file",
            Problem::UnreportedJob => "killed job unreported in `hoist log`",
            Problem::StaleLock => "stale lock",
            Problem::FailedNextDeploy => "failed next deploy",
            Problem::NotToldByNextDeploy => "interrupted job not told by the next deploy",
            Problem::Leftover => "leftover temp files",
            Problem::OrphanProcess => "the killed job's processes still running",
        })
    }
}

/// `current` is a relative link to `releases/ID`, a finished release: a directory with
/// a `REVISION` naming a commit and the app's `VERSION`.
fn check_current(deploy_to: &Path) -> Result<String, String> {
    let link = deploy_to.join("current");
    let target = std::fs::read_link(&link).map_err(|e| format!("current: {e}"))?;
    let id = target
        .strip_prefix("releases")
        .ok()
        .and_then(|rest| rest.to_str())
        .filter(|id| !id.is_empty() && !id.contains('/') && !id.starts_with('.'))
        .filter(|id| !id.ends_with(".tmp"))
        .ok_or_else(|| format!("current -> {} is not releases/ID", target.display()))?
        .to_string();
    let dir = deploy_to.join(&target);
    if !dir.is_dir() {
        return Err(format!("current -> {} dangles", target.display()));
    }
    let revision = std::fs::read_to_string(dir.join("REVISION")).unwrap_or_default();
    let revision = revision.trim();
    if revision.len() != 40 || !revision.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "current -> {id} has no REVISION (got {revision:?}): half-built"
        ));
    }
    if !dir.join("VERSION").is_file() {
        return Err(format!("current -> {id} lacks the app's VERSION"));
    }
    Ok(id)
}

/// Every JSON state file parses and every job event log is a sequence of whole
/// length-delimited records (no torn record, not even a last one).
fn check_state_files(state: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let app = state.join("apps/web");
    for name in ["journal.json", "lock.json", "running.json"] {
        let path = app.join(name);
        let Ok(bytes) = std::fs::read(&path) else {
            if name == "journal.json" {
                bad.push(format!("{} is missing", path.display()));
            }
            continue;
        };
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            bad.push(format!("{} does not parse: {e}", path.display()));
        }
    }
    for entry in std::fs::read_dir(state.join("jobs/web"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "events")
            && let Err(e) = check_frames(&std::fs::read(&path).unwrap_or_default())
        {
            bad.push(format!("{}: {e}", path.display()));
        }
    }
    bad
}

/// Varint length prefixes, each followed by that many bytes, to the end of the file.
fn check_frames(mut bytes: &[u8]) -> Result<(), String> {
    let mut records = 0;
    while !bytes.is_empty() {
        let (mut len, mut shift, mut used) = (0u64, 0u32, 0usize);
        loop {
            let Some(&b) = bytes.get(used) else {
                return Err(format!("torn length after {records} records"));
            };
            used += 1;
            len |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(format!("bad length after {records} records"));
            }
        }
        let end = used as u64 + len;
        if end > bytes.len() as u64 {
            return Err(format!(
                "torn record {records}: {len} bytes announced, {} there",
                bytes.len() - used
            ));
        }
        bytes = &bytes[end as usize..];
        records += 1;
    }
    Ok(())
}

/// Files a crashed agent leaves behind, under the state dir and `deploy_to`: atomic
/// writers' temps (`.NAME.tmp-PID-N`), `releases/.ID.index`, `releases/ID.tmp`,
/// `.current.ID.tmp`, `repos/APP.git.tmp`, releases without `REVISION`, and a
/// `running.json` when no job runs. Release contents and git mirrors are not walked.
fn leftovers(state: &Path, deploy_to: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut walk = vec![state.to_path_buf(), deploy_to.to_path_buf()];
    while let Some(dir) = walk.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let temp = (name.starts_with('.') && name.contains(".tmp-"))
                || (name.starts_with('.') && name.ends_with(".index"))
                || name.ends_with(".tmp");
            if temp {
                found.push(path.display().to_string());
                continue;
            }
            let in_releases = dir.file_name().is_some_and(|n| n == "releases");
            if in_releases && is_dir && !path.join("REVISION").is_file() {
                found.push(format!("{} (a release without REVISION)", path.display()));
                continue;
            }
            let skip = in_releases || name.ends_with(".git") || name == "shared";
            if is_dir && !skip {
                walk.push(path);
            }
        }
    }
    if state.join("apps/web/running.json").exists() {
        found.push("apps/web/running.json with no job running".into());
    }
    found.sort();
    found
}

/// Processes still running with the killed job's id in their environment (its hooks
/// and git carry `HOIST_DEPLOY_ID`): the restarted agent must have stopped them.
fn orphans_of(job: &str) -> Vec<String> {
    let wanted = format!("HOIST_DEPLOY_ID={job}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes()) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map_or("?", |(_, rest)| &rest[..1]);
        if state != "Z" && state != "X" {
            let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            found.push(format!(
                "pid {} ({})",
                entry.file_name().to_string_lossy(),
                cmd.trim()
            ));
        }
    }
    found
}

/// `hoist log web --json`: (result, error) of each listed job, by id.
fn logged_jobs(fleet: &str) -> Result<BTreeMap<String, (String, String)>, String> {
    let ran = cli::hoist_within(
        &["log", "web", "--json", "--limit", "100", "--fleet", fleet],
        CLI_LIMIT,
    );
    if !ran.ok() {
        return Err(ran.describe());
    }
    let json: serde_json::Value =
        serde_json::from_str(&ran.stdout).map_err(|e| format!("{e}: {}", ran.describe()))?;
    let host = &json["hosts"][0];
    if let Some(error) = host["error"].as_str() {
        return Err(format!("web-1 answered with an error: {error}"));
    }
    Ok(host["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|job| {
            Some((
                job["job_id"].as_str()?.to_string(),
                (
                    job["result"].as_str().unwrap_or_default().to_string(),
                    job["error"].as_str().unwrap_or_default().to_string(),
                ),
            ))
        })
        .collect())
}

/// `hoist log web --job ID --json`: the result of its `finished` event.
fn logged_end(fleet: &str, job: &str) -> Result<String, String> {
    let ran = cli::hoist_within(
        &["log", "web", "--job", job, "--json", "--fleet", fleet],
        CLI_LIMIT,
    );
    if !ran.ok() {
        return Err(ran.describe());
    }
    let json: serde_json::Value =
        serde_json::from_str(&ran.stdout).map_err(|e| format!("{e}: {}", ran.describe()))?;
    json["hosts"][0]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .find(|e| e["kind"] == "finished")
        .and_then(|e| e["result"].as_str().map(String::from))
        .ok_or_else(|| format!("its log has no finished event: {}", ran.describe()))
}

// === one kill ===

#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// Right after the job's Nth event (0 = `started`) reached the client.
    Event(usize),
    /// This long after the deploy call.
    Delay(Duration),
}

impl fmt::Display for KillAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KillAt::Event(n) => write!(f, "after event #{n}"),
            KillAt::Delay(d) => write!(f, "after {}ms", d.as_millis()),
        }
    }
}

struct Plan {
    run: usize,
    kill: KillAt,
    fetch_delay: Duration,
}

/// Deploys `job`, kills hoistd at `plan.kill`; returns where the kill landed, in
/// words and as a [`phase`].
async fn deploy_and_kill(
    agent: &Agent,
    client: &mut AgentClient<Channel>,
    job: &str,
    plan: &Plan,
) -> (String, String) {
    let started = Instant::now();
    let mut stream = match deploy_stream(client, job).await {
        Ok(s) => Some(s),
        Err(status) => {
            agent.signal(Signal::SIGKILL);
            return (
                format!("the deploy was refused ({status}); killed anyway"),
                "refused".into(),
            );
        }
    };
    let mut seen: Vec<String> = Vec::new();
    let deadline = match plan.kill {
        KillAt::Event(_) => started + JOB_LIMIT,
        KillAt::Delay(d) => started + d,
    };
    while let Some(current) = stream.as_mut() {
        if let KillAt::Event(n) = plan.kill
            && seen.len() > n
        {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match tokio::time::timeout(deadline - now, current.message()).await {
            Ok(Ok(Some(event))) => seen.push(describe_event(&event)),
            Ok(_) => stream = None, // the job's stream ended (finished) or broke
            Err(_) => break,        // the delay is up
        }
    }
    agent.signal(Signal::SIGKILL);
    let landed = format!(
        "killed {} at {:.0?} ({} events seen, last: {})",
        plan.kill,
        started.elapsed(),
        seen.len(),
        seen.last().map_or("none", String::as_str)
    );
    (landed, phase(seen.last().map(String::as_str)))
}

/// Where in the job a kill landed, from the last event the client saw: "in STEP",
/// "after STEP", "after the end", "between steps" or "before any event".
fn phase(last: Option<&str>) -> String {
    let Some(last) = last else {
        return "before any event".into();
    };
    if let Some(step) = last
        .strip_prefix("step_started ")
        .or_else(|| last.strip_prefix("output of "))
    {
        format!("in {step}")
    } else if let Some(step) = last.strip_prefix("step_finished ") {
        format!("after {step}")
    } else if last.starts_with("finished") {
        "after the end".into()
    } else {
        "between steps".into()
    }
}

/// Everything wrong after the restart that followed killing `job`.
async fn inspect(
    client: &mut AgentClient<Channel>,
    fleet: &str,
    dirs: (&Path, &Path),
    job: &str,
    next: &str,
) -> (Vec<(Problem, String)>, String) {
    let (state, deploy_to) = dirs;
    let mut problems = Vec::new();
    let mut outcome = String::from("?");
    let orphans = orphans_of(job);
    if !orphans.is_empty() {
        problems.push((Problem::OrphanProcess, orphans.join(", ")));
    }
    if let Err(e) = check_current(deploy_to) {
        problems.push((Problem::BrokenCurrent, e));
    }
    for e in check_state_files(state) {
        problems.push((Problem::CorruptState, e));
    }
    // The killed job, in `hoist log`, with a final result.
    let mut interrupted = false;
    match logged_jobs(fleet) {
        Err(e) => problems.push((Problem::UnreportedJob, format!("hoist log failed: {e}"))),
        Ok(jobs) => match jobs.get(job) {
            None => problems.push((
                Problem::UnreportedJob,
                format!(
                    "{job} is missing from `hoist log web` (it lists {:?})",
                    jobs.keys().collect::<Vec<_>>()
                ),
            )),
            Some((res, _)) if res.is_empty() || res == "running" => problems.push((
                Problem::UnreportedJob,
                format!("{job} is listed as {res:?} after the restart"),
            )),
            Some((res, _)) => {
                outcome = res.clone();
                interrupted = res == "interrupted";
                match logged_end(fleet, job) {
                    Ok(end) if end == *res => {}
                    Ok(end) => problems.push((
                        Problem::UnreportedJob,
                        format!("{job}: `hoist log` says {res}, its event log ends {end}"),
                    )),
                    Err(e) => problems.push((
                        Problem::UnreportedJob,
                        format!("`hoist log web --job {job}`: {e}"),
                    )),
                }
            }
        },
    }
    // No lock and no running job survive the restart.
    match client.status(StatusRequest { app: "web".into() }).await {
        Ok(status) => {
            let status = status.into_inner();
            if let Some(app) = status.apps.first() {
                if let Some(lock) = &app.lock {
                    problems.push((
                        Problem::StaleLock,
                        format!(
                            "locked by {} (job {}, expires {:?}) after the restart",
                            lock.holder,
                            lock.deploy_id,
                            lock.expires_at.as_ref().map(|t| t.seconds)
                        ),
                    ));
                    // Counted; broken by hand as an operator would, so the later runs
                    // are measured on their own, not refused by this one's lock.
                    let unlock = cli::hoist_within(
                        &["unlock", "web", "--force", "--fleet", fleet],
                        CLI_LIMIT,
                    );
                    if !unlock.ok() {
                        eprintln!("cannot break the stale lock: {}", unlock.describe());
                    }
                }
                if !app.running_job.is_empty() {
                    problems.push((
                        Problem::StaleLock,
                        format!("job {} still running after the restart", app.running_job),
                    ));
                }
            }
        }
        Err(e) => problems.push((Problem::StaleLock, format!("status failed: {e}"))),
    }
    // The next deploy goes through, and tells of the interrupted job.
    match deploy_stream(client, next).await {
        Err(status) => problems.push((
            Problem::FailedNextDeploy,
            format!("refused: {}", status.message()),
        )),
        Ok(mut stream) => match drain(&mut stream).await {
            Err(e) => problems.push((Problem::FailedNextDeploy, e)),
            Ok(events) => {
                let (res, _, err) = result_of(&events);
                if res != Some(JobResult::Succeeded) {
                    problems.push((
                        Problem::FailedNextDeploy,
                        format!("{res:?}: {err}\n{}", cli::tail(&output(&events), 1500)),
                    ));
                }
                let told = events.iter().any(|e| match &e.kind {
                    Some(Kind::Notice(n)) => n.message.contains(job),
                    _ => false,
                });
                if interrupted && !told {
                    problems.push((
                        Problem::NotToldByNextDeploy,
                        format!("no notice of {job} among the events of {next}"),
                    ));
                }
            }
        },
    }
    let left = leftovers(state, deploy_to);
    if !left.is_empty() {
        problems.push((Problem::Leftover, left.join(", ")));
    }
    (problems, outcome)
}

fn result_of(events: &[JobEvent]) -> (Option<JobResult>, String, String) {
    if events
        .iter()
        .any(|e| matches!(e.kind, Some(Kind::Finished(_))))
    {
        let (res, release, error) = result(events);
        (Some(res), release, error)
    } else {
        (None, String::new(), "no finished event".into())
    }
}

#[tokio::test]

async fn random_kills_never_break_current_leave_locks_or_lose_jobs() {
    let test = "random_kills_never_break_current_leave_locks_or_lose_jobs";
    if e2e::require("git", "git", test).is_none() {
        return;
    }
    let runs = env_number("HOIST_CRASH_RUNS").map_or(DEFAULT_RUNS, |n| n as usize);
    let budget = env_number("HOIST_CRASH_BUDGET").map_or(DEFAULT_BUDGET, Duration::from_secs);
    let seed = seed();
    eprintln!(
        "crash suite: {runs} runs, seed {seed} (replay: HOIST_CRASH_SEED={seed} HOIST_CRASH_RUNS={runs})"
    );
    let mut rng = Rng(seed);

    let repo = AppRepo::new_static(&[("index.html", "hi\n")]);
    repo.commit_version("1", &[]);
    let server = GitHttp::start(Path::new(&repo.url()), Duration::from_millis(60)).unwrap();
    let root = deploy_root();
    let deploy_to = root.path().join("web");
    let pki = Pki::new();
    let mut agent = AgentBuilder::new(&pki)
        .apps(&app_toml(&server.url(), &deploy_to, "30s"))
        .start()
        .await;
    pin_port(&agent);
    let fleet = fleet_file(root.path(), &pki, &agent);
    let state: PathBuf = agent.dir.path().join("state");

    // A first deploy, never killed: `current` exists, and it measures a deploy.
    let mut client = agent.connect(&pki, Who::Deployer).await.unwrap();
    let clock = Instant::now();
    let mut stream = deploy_stream(&mut client, "warm-up").await.unwrap();
    let events = drain(&mut stream).await.unwrap();
    let (res, _, err) = result(&events);
    assert_eq!(res, JobResult::Succeeded, "{err}\n{}", output(&events));
    let (event_count, took) = (events.len() as u64, clock.elapsed());
    eprintln!("warm-up deploy: {event_count} events in {took:?}");

    let suite = Instant::now();
    let mut problems: BTreeMap<Problem, Vec<String>> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    let mut done = 0;
    for run in 0..runs {
        if suite.elapsed() > budget {
            break;
        }
        let plan = Plan {
            run,
            kill: if rng.below(2) == 0 {
                KillAt::Event(rng.below(event_count) as usize)
            } else {
                let max = u64::try_from(took.as_millis() * 6 / 5).unwrap_or(u64::MAX);
                KillAt::Delay(Duration::from_millis(rng.below(max)))
            },
            fetch_delay: Duration::from_millis([0, 20, 60, 120][rng.below(4) as usize]),
        };
        server.set_delay(plan.fetch_delay);
        repo.commit_version(&format!("{}", run + 2), &[]);
        let job = format!("crash-{run}");
        let (landed, phase) = deploy_and_kill(&agent, &mut client, &job, &plan).await;
        *phases.entry(phase).or_default() += 1;
        agent = agent.restart().await;
        client = agent.connect(&pki, Who::Deployer).await.unwrap();
        let (found, outcome) = inspect(
            &mut client,
            &fleet,
            (&state, &deploy_to),
            &job,
            &format!("next-{run}"),
        )
        .await;
        let at = format!(
            "run {} (seed {seed}, fetch delay {}ms, {landed})",
            plan.run,
            plan.fetch_delay.as_millis()
        );
        eprintln!("{at}: {outcome}, {} problem(s)", found.len());
        *outcomes.entry(outcome).or_default() += 1;
        for (problem, detail) in found {
            problems
                .entry(problem)
                .or_default()
                .push(format!("{at}: {detail}"));
        }
        done += 1;
    }

    let mut report = String::new();
    if done < runs {
        report.push_str(&format!(
            "only {done} of {runs} runs within the budget of {budget:?} (HOIST_CRASH_BUDGET)\n"
        ));
    }
    for (problem, list) in &problems {
        report.push_str(&format!("{problem}: {} of {done} runs\n", list.len()));
        for line in list {
            report.push_str(&format!("  - {line}\n"));
        }
    }
    assert!(
        report.is_empty(),
        "crash suite, seed {seed} (replay: HOIST_CRASH_SEED={seed} HOIST_CRASH_RUNS={runs}); \
         killed jobs ended {outcomes:?}, kills landed {phases:?}\n{report}"
    );
    eprintln!(
        "crash suite: {done} kills in {:.0?}, killed jobs ended {outcomes:?}, kills landed \
         {phases:?}, 0 problems",
        suite.elapsed()
    );
}

/// Via the CLI: `hoist deploy` is following a job whose fetch hangs when hoistd is
/// killed. After the restart the job is reported `interrupted` (to the `hoist deploy`
/// following it, and in `hoist log`), and the next `hoist deploy` goes through at once:
/// the lease the dead job ran under (the controller's, 60 s) does not block it.
#[tokio::test]

async fn cli_deploy_after_a_kill_during_a_hanging_fetch_is_not_blocked() {
    let test = "cli_deploy_after_a_kill_during_a_hanging_fetch_is_not_blocked";
    if e2e::require("git", "git", test).is_none() {
        return;
    }
    let repo = AppRepo::new_static(&[("index.html", "hi\n")]);
    repo.commit_version("1", &[]);
    let server = GitHttp::start(Path::new(&repo.url()), Duration::ZERO).unwrap();
    let root = deploy_root();
    let deploy_to = root.path().join("web");
    let pki = Pki::new();
    let agent = AgentBuilder::new(&pki)
        .apps(&app_toml(&server.url(), &deploy_to, "10m"))
        .start()
        .await;
    pin_port(&agent);
    let fleet = fleet_file(root.path(), &pki, &agent);
    let fl = fleet.as_str();

    let first = cli::hoist_within(
        &["deploy", "web", "--ref", "main", "--fleet", fl],
        JOB_LIMIT,
    );
    assert!(first.ok(), "{}", first.describe());

    // v2's fetch hangs; the agent dies while `hoist deploy` follows it.
    repo.commit_version("2", &[]);
    server.hang();
    let mut inflight =
        Background::start(&["deploy", "web", "--ref", "main", "--fleet", fl, "--json"]);
    let job = e2e::eventually("the fetch hangs", Duration::from_secs(20), || async {
        let text = inflight.stdout();
        let job = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["kind"] == "started")
            .and_then(|e| e["job_id"].as_str().map(String::from));
        job.filter(|_| server.held() > 0)
            .ok_or_else(|| format!("held {}; {}", server.held(), inflight.recent(500)))
    })
    .await;
    agent.signal(Signal::SIGKILL);
    server.release();
    let agent = agent.restart().await;

    let mut failures = Vec::new();
    // The `hoist deploy` that was following the job hears how it ended, and stops.
    let ended = inflight.finish(Duration::from_secs(30), cli::retries_past_limit);
    let said = format!("{}{}", ended.stdout, ended.stderr);
    if ended.status.is_none() {
        failures.push(format!(
            "the in-flight `hoist deploy` did not end after the restart: {}",
            ended.describe()
        ));
    } else if !said.contains("interrupted") {
        failures.push(format!(
            "the in-flight `hoist deploy` did not report {job} interrupted: {}",
            ended.describe()
        ));
    }
    // The next deploy is not refused by the lease of the dead rollout.
    let next = cli::hoist_within(
        &["deploy", "web", "--ref", "main", "--fleet", fl],
        JOB_LIMIT,
    );
    eprintln!(
        "the in-flight `hoist deploy` ended {:?} after the restart; the next deploy took {:.1?}",
        ended.status, next.elapsed
    );
    if !next.ok() {
        failures.push(format!("the next deploy failed: {}", next.describe()));
    } else if next.elapsed > Duration::from_secs(20) {
        failures.push(format!("the next deploy waited: {}", next.describe()));
    }
    if next.ok() && !format!("{}{}", next.stdout, next.stderr).contains(&job) {
        failures.push(format!(
            "the next deploy did not tell of the interrupted {job}: {}",
            next.describe()
        ));
    }
    match logged_jobs(fl) {
        Ok(jobs) => match jobs.get(&job) {
            Some((res, _)) if res == "interrupted" => match logged_end(fl, &job) {
                Ok(end) if end == "interrupted" => {}
                other => failures.push(format!(
                    "`hoist log web --job {job}` does not end interrupted: {other:?}"
                )),
            },
            other => failures.push(format!(
                "`hoist log web` shows {job} as {other:?}, not interrupted (it lists {:?})",
                jobs.keys().collect::<Vec<_>>()
            )),
        },
        Err(e) => failures.push(format!("hoist log failed: {e}")),
    }
    let left = leftovers(&agent.dir.path().join("state"), &deploy_to);
    if !left.is_empty() {
        failures.push(format!("leftovers: {}", left.join(", ")));
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n- {}",
        failures.len(),
        failures.join("\n- ")
    );
}
