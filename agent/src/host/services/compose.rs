//! Compose projects through `docker compose` (or `docker-compose`) and `docker ps`.

use std::path::Path;

use hoist_proto::v1::ServiceState;

use crate::{
    config::ComposeAction,
    state::beneath::{Dir, Root},
};

use super::*;

/// `docker ps` rows as [`parse_docker_ps`] reads them: service, state, status.
pub(super) const DOCKER_PS_FORMAT: &str =
    "{{.Label \"com.docker.compose.service\"}}\t{{.State}}\t{{.Status}}";

/// The `docker ps` filter selecting a compose project's containers.
pub(crate) fn compose_filter(project: &str) -> String {
    format!("label=com.docker.compose.project={project}")
}

/// The `docker ps` filter leaving out one-off containers (`compose run`, e.g. a
/// migration): they carry the service's label, but an exited one is not the service
/// being down.
pub(crate) const COMPOSE_NOT_ONEOFF: &str = "label=com.docker.compose.oneoff=False";

/// `docker ps` arguments listing a compose project's service containers (`filter` is
/// [`compose_filter`]'s).
pub(super) fn docker_ps_args(filter: &str) -> [&str; 8] {
    [
        "ps",
        "--all",
        "--filter",
        filter,
        "--filter",
        COMPOSE_NOT_ONEOFF,
        "--format",
        DOCKER_PS_FORMAT,
    ]
}

pub(super) async fn compose(project: &str, services: &[String]) -> (ServiceState, String) {
    let filter = compose_filter(project);
    match tool("docker", &docker_ps_args(&filter)).await {
        Err(err) => (ServiceState::Unknown, err.to_string()),
        Ok((false, out)) => (ServiceState::Unknown, out.trim().to_string()),
        Ok((true, out)) => parse_docker_ps(&out, services),
    }
}

/// Aggregates `docker ps` rows of a compose project (only the declared services, when
/// any are declared).
pub fn parse_docker_ps(out: &str, services: &[String]) -> (ServiceState, String) {
    let mut rows: Vec<(&str, &str, &str)> = out
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            Some((f.next()?, f.next()?, f.next().unwrap_or("")))
        })
        .filter(|(svc, _, _)| services.is_empty() || services.iter().any(|s| s == svc))
        .collect();
    rows.sort();
    let missing: Vec<&String> = services
        .iter()
        .filter(|s| !rows.iter().any(|(svc, _, _)| svc == s))
        .collect();
    if rows.is_empty() {
        return (ServiceState::Stopped, "no containers".into());
    }
    let mut detail: Vec<String> = rows
        .iter()
        .map(|(svc, _, status)| format!("{svc}: {status}"))
        .collect();
    detail.extend(missing.iter().map(|s| format!("{s}: no container")));
    let state = if rows
        .iter()
        .any(|(_, st, status)| *st == "dead" || status.contains("unhealthy"))
    {
        ServiceState::Failed
    } else if !missing.is_empty() || rows.iter().any(|(_, st, _)| *st != "running") {
        if rows
            .iter()
            .any(|(_, st, _)| *st == "restarting" || *st == "created")
        {
            ServiceState::Starting
        } else {
            ServiceState::Stopped
        }
    } else if rows
        .iter()
        .any(|(_, _, status)| status.contains("health: starting"))
    {
        ServiceState::Starting
    } else {
        ServiceState::Running
    };
    (state, detail.join("; "))
}

/// Named in the error when neither flavour of compose is available.
pub(super) const COMPOSE_TOOLS: &str = "docker compose (v2 plugin) or docker-compose";
/// Compose's own default file names, in its order of preference.
pub(super) const COMPOSE_DEFAULT_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

// --- compose ---

/// Where and what compose acts on.
pub(super) struct ComposeTarget<'a> {
    pub(super) release_dir: &'a Path,
    pub(super) compose_file: Option<&'a str>,
    pub(super) project: &'a str,
    pub(super) services: &'a [String],
}

pub(super) async fn restart_compose(
    run: &Runner<'_>,
    target: &ComposeTarget<'_>,
    action: ComposeAction,
) -> Result<String, RestartError> {
    let file = compose_file(target.release_dir, target.compose_file)
        .map_err(|problem| run.failed(problem.to_string(), ""))?;
    let mut argv: Vec<&str> = compose_command(run).await?;
    argv.extend(["-p", target.project, "-f", file]);
    argv.extend(match action {
        ComposeAction::Recreate => &["up", "-d", "--force-recreate", "--no-deps"][..],
        ComposeAction::Restart => &["restart"][..],
    });
    argv.extend(target.services.iter().map(String::as_str));
    run.action(&argv, Some(target.release_dir), None)
        .await
        .map_err(|err| match err {
            RestartError::NotInstalled { service, .. } => RestartError::NotInstalled {
                service,
                tool: COMPOSE_TOOLS.into(),
            },
            err => err,
        })?;
    let filter = compose_filter(target.project);
    let mut ps = vec!["docker"];
    ps.extend(docker_ps_args(&filter));
    let ps = &ps;
    let detail = run
        .poll(move || async move {
            let listed = run.tool(ps).await?;
            if !listed.success {
                return Ok(Progress::Waiting(listed.text));
            }
            Ok(match parse_docker_ps(&listed.text, target.services) {
                (ServiceState::Running, detail) => Progress::Ready(detail),
                (ServiceState::Failed, detail) => Progress::Failed(detail, String::new()),
                (_, detail) => Progress::Waiting(detail),
            })
        })
        .await?;
    let done = match action {
        ComposeAction::Recreate => "recreated",
        ComposeAction::Restart => "restarted",
    };
    Ok(format!("{} {done}: {detail}", target.project))
}

/// The compose file argument (relative to the release dir, or absolute): the configured
/// one, or compose's default names, whichever exists first. A relative one is release
/// content, which docker (root) reads: it must be a regular file reached without a
/// link, or compose would read (and quote in its errors) whatever the link points at.
pub(super) fn compose_file<'a>(
    release_dir: &Path,
    configured: Option<&'a str>,
) -> Result<&'a str, NoComposeFile> {
    if let Some(file) = configured.filter(|f| Path::new(f).is_absolute()) {
        // Named by the root-owned config.
        return if Path::new(file).is_file() {
            Ok(file)
        } else {
            Err(NoComposeFile::Missing(file.into()))
        };
    }
    let candidates: Vec<&str> = match configured {
        Some(file) => vec![file],
        None => COMPOSE_DEFAULT_FILES.to_vec(),
    };
    let missing = || match configured {
        Some(file) => NoComposeFile::Missing(release_dir.join(file)),
        None => NoComposeFile::NoDefault(release_dir.to_path_buf()),
    };
    let dir = match Dir::open_trusted(release_dir) {
        Ok(dir) => dir.rooted(Root::Release),
        Err(e) if e.not_found() => return Err(missing()),
        Err(e) => return Err(NoComposeFile::Unsafe(e.to_string())),
    };
    for name in candidates {
        match dir.lstat(name) {
            Ok(None) => continue,
            Ok(Some(_)) => {
                return dir
                    .check_writable(name)
                    .map(|_| name)
                    .map_err(|e| NoComposeFile::Unsafe(e.to_string()));
            }
            Err(e) => return Err(NoComposeFile::Unsafe(e.to_string())),
        }
    }
    Err(missing())
}

/// Why there is no compose file to act on.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum NoComposeFile {
    #[error("compose file {} does not exist", .0.display())]
    Missing(std::path::PathBuf),
    #[error(
        "no compose file in {}: expected one of {}",
        .0.display(),
        COMPOSE_DEFAULT_FILES.join(", ")
    )]
    NoDefault(std::path::PathBuf),
    /// A link, a hard link or not a regular file (the message names it).
    #[error("{0}")]
    Unsafe(String),
}

/// `docker compose` when the v2 plugin answers `docker compose version`, else
/// `docker-compose` (whose absence [`restart_compose`] reports).
pub(super) async fn compose_command(run: &Runner<'_>) -> Result<Vec<&'static str>, RestartError> {
    match run.tool(&["docker", "compose", "version"]).await {
        Ok(out) if out.success => Ok(vec!["docker", "compose"]),
        Ok(_) | Err(RestartError::NotInstalled { .. }) => Ok(vec!["docker-compose"]),
        Err(err) => Err(err),
    }
}

/// `compose -p P -f F` with the compose command found on this host.
async fn compose_base<'a>(
    run: &Runner<'_>,
    target: &ComposeTarget<'a>,
) -> Result<Vec<&'a str>, RestartError> {
    let file = compose_file(target.release_dir, target.compose_file)
        .map_err(|problem| run.failed(problem.to_string(), ""))?;
    let mut argv: Vec<&str> = compose_command(run).await?;
    argv.extend(["-p", target.project, "-f", file]);
    Ok(argv)
}

fn compose_tools(err: RestartError) -> RestartError {
    match err {
        RestartError::NotInstalled { service, .. } => RestartError::NotInstalled {
            service,
            tool: COMPOSE_TOOLS.into(),
        },
        err => err,
    }
}

/// `compose stop [services]`, then waits until none of them runs.
pub(super) async fn stop_compose(
    run: &Runner<'_>,
    target: &ComposeTarget<'_>,
) -> Result<String, RestartError> {
    let mut argv = compose_base(run, target).await?;
    argv.push("stop");
    argv.extend(target.services.iter().map(String::as_str));
    run.action(&argv, Some(target.release_dir), None)
        .await
        .map_err(compose_tools)?;
    let detail = compose_wait(run, target, |state| match state {
        ServiceState::Stopped | ServiceState::Failed => Some(true),
        _ => None,
    })
    .await?;
    Ok(format!("{} stopped: {detail}", target.project))
}

/// `compose up -d [services]` (containers kept when their config is unchanged), then
/// waits until they run.
pub(super) async fn start_compose(
    run: &Runner<'_>,
    target: &ComposeTarget<'_>,
) -> Result<String, RestartError> {
    let mut argv = compose_base(run, target).await?;
    argv.extend(["up", "-d"]);
    argv.extend(target.services.iter().map(String::as_str));
    run.action(&argv, Some(target.release_dir), None)
        .await
        .map_err(compose_tools)?;
    let detail = compose_wait(run, target, |state| match state {
        ServiceState::Running => Some(true),
        ServiceState::Failed => Some(false),
        _ => None,
    })
    .await?;
    Ok(format!("{} started: {detail}", target.project))
}

/// Polls `docker ps` until `verdict` says done (`true`) or failed (`false`).
async fn compose_wait(
    run: &Runner<'_>,
    target: &ComposeTarget<'_>,
    verdict: impl Fn(ServiceState) -> Option<bool>,
) -> Result<String, RestartError> {
    let filter = compose_filter(target.project);
    let mut ps = vec!["docker"];
    ps.extend(docker_ps_args(&filter));
    let (ps, verdict) = (&ps, &verdict);
    run.poll(move || async move {
        let listed = run.tool(ps).await?;
        if !listed.success {
            return Ok(Progress::Waiting(listed.text));
        }
        let (state, detail) = parse_docker_ps(&listed.text, target.services);
        Ok(match verdict(state) {
            Some(true) => Progress::Ready(detail),
            Some(false) => Progress::Failed(detail, String::new()),
            None => Progress::Waiting(detail),
        })
    })
    .await
}

/// The services of the target's compose file: `compose config --services`.
pub(super) async fn compose_services(
    run: &Runner<'_>,
    target: &ComposeTarget<'_>,
) -> Result<Vec<String>, RestartError> {
    let mut argv = compose_base(run, target).await?;
    argv.extend(["config", "--services"]);
    let out = run
        .run(&argv, Some(target.release_dir), false)
        .await
        .map_err(compose_tools)?;
    if !out.success {
        return Err(run.failed(format!("`{}` {}", argv.join(" "), out.status), out.text));
    }
    Ok(out
        .text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains(' '))
        .map(String::from)
        .collect())
}
