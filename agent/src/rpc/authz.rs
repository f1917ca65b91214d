//! The one authorization layer: every gRPC request passes here before any handler.
//! Each method is mapped to the least role allowed to call it; anything not in the
//! table is denied.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{Status, body::Body};
use tower::{Layer, Service};

use crate::rpc::tls::{Peer, Role};

/// The least role a gRPC method needs, or `None` when the method is unknown.
pub fn required_role(path: &str) -> Option<Role> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    match service {
        "hoist.v1.Agent" => match method {
            "GetInfo" | "Status" | "WatchStatus" | "Attach" | "JobLog" | "ListReleases"
            | "PlanRollback" | "EnvList" | "ListBackups" | "Logs" => Some(Role::Viewer),
            // Runs the app's commands (read-only by contract) as its user.
            "PendingMigrations" => Some(Role::Deployer),
            "Backup" | "Restore" => Some(Role::Deployer),
            // The agent checks each task's own role against the caller's.
            "RunTask" => Some(Role::Viewer),
            "Deploy" | "Rollback" | "Restart" | "Stop" | "Start" | "Lock" | "Unlock" | "EnvSet"
            | "EnvUnset" | "RecordRefusal" | "PlanDeploy" => Some(Role::Deployer),
            _ => None,
        },
        "grpc.health.v1.Health" => match method {
            "Check" | "Watch" | "List" => Some(Role::Viewer),
            _ => None,
        },
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => {
            match method {
                "ServerReflectionInfo" => Some(Role::Viewer),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Decides one request: the verified peer and the method it calls.
pub fn authorize(peer: Option<&Peer>, path: &str) -> Result<(), Status> {
    let Some(peer) = peer else {
        return Err(Status::unauthenticated(
            "no verified client certificate on this connection; connect with a certificate \
             issued by `hoist ca issue`",
        ));
    };
    let Some(needed) = required_role(path) else {
        return Err(Status::permission_denied(format!(
            "method {path} is not allowed for any role"
        )));
    };
    match peer.role {
        None => Err(Status::permission_denied(format!(
            "certificate of {} carries no hoist role; issue one with `hoist ca issue --user {} \
             --role viewer|deployer`",
            peer.name, peer.name
        ))),
        Some(role) if role < needed => Err(Status::permission_denied(format!(
            "{} has role {role}; {} needs role {needed}",
            peer.name,
            path.rsplit('/').next().unwrap_or(path)
        ))),
        Some(_) => Ok(()),
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct AuthzLayer;

impl<S> Layer<S> for AuthzLayer {
    type Service = Authz<S>;

    fn layer(&self, inner: S) -> Authz<S> {
        Authz { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Authz<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> Service<http::Request<Body>> for Authz<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let peer = req.extensions().get::<Peer>();
        match authorize(peer, req.uri().path()) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(status) => {
                tracing::info!(
                    method = req.uri().path(),
                    peer = peer.map(|p| p.name.as_str()).unwrap_or("-"),
                    reason = status.message(),
                    "request denied"
                );
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(role: Option<Role>) -> Peer {
        Peer {
            addr: None,
            name: "alice".into(),
            role,
        }
    }

    #[test]
    fn deny_by_default() {
        let deployer = peer(Some(Role::Deployer));
        assert!(authorize(Some(&deployer), "/hoist.v1.Agent/Shell").is_err());
        assert!(authorize(Some(&deployer), "/hoist.v1.Other/Status").is_err());
        assert!(authorize(Some(&deployer), "garbage").is_err());
    }

    #[test]
    fn roles() {
        let viewer = peer(Some(Role::Viewer));
        let deployer = peer(Some(Role::Deployer));
        let none = peer(None);
        assert!(authorize(Some(&viewer), "/hoist.v1.Agent/Status").is_ok());
        let denied = authorize(Some(&viewer), "/hoist.v1.Agent/Deploy").unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied.message().contains("needs role deployer"));
        assert!(authorize(Some(&deployer), "/hoist.v1.Agent/Deploy").is_ok());
        assert!(authorize(Some(&none), "/hoist.v1.Agent/Status").is_err());
        let anon = authorize(None, "/hoist.v1.Agent/Status").unwrap_err();
        assert_eq!(anon.code(), tonic::Code::Unauthenticated);
        assert!(authorize(Some(&viewer), "/grpc.health.v1.Health/Check").is_ok());
        assert!(authorize(Some(&viewer), "/hoist.v1.Agent/RunTask").is_ok());
        assert!(authorize(Some(&viewer), "/hoist.v1.Agent/Stop").is_err());
        assert!(authorize(Some(&deployer), "/hoist.v1.Agent/Start").is_ok());
        // Backups: a viewer lists them; taking, restoring and running the app's
        // migration status commands need a deployer.
        assert!(authorize(Some(&viewer), "/hoist.v1.Agent/ListBackups").is_ok());
        for method in ["Backup", "Restore", "PendingMigrations"] {
            let path = format!("/hoist.v1.Agent/{method}");
            assert!(authorize(Some(&viewer), &path).is_err(), "{method}");
            assert!(authorize(Some(&deployer), &path).is_ok(), "{method}");
        }
    }
}
