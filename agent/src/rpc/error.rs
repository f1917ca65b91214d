//! The one mapping from the agent's domain errors to `tonic::Status`. Domain modules
//! return their own error enums; handlers use `?` and the code is chosen here. The
//! message is always the error's own text.

use tonic::{Code, Status};

use crate::{
    apps::AppsError,
    config::UnknownApp,
    flows::{RollbackRefusal, events::InvalidJobId},
    rpc::bounds::OutOfBounds,
    state::{
        envfile::{EnvError, EnvFileError},
        journal::{JournalError, TargetError},
        lock::LockError,
        release::NameError,
    },
};

fn status(code: Code, err: &impl std::fmt::Display) -> Status {
    Status::new(code, err.to_string())
}

impl From<AppsError> for Status {
    fn from(err: AppsError) -> Status {
        let code = match &err {
            AppsError::UnknownApp(_) | AppsError::NoLongerConfigured(_) => Code::NotFound,
            AppsError::InvalidJobId(_) => Code::InvalidArgument,
            AppsError::JobIdTaken { .. } => Code::AlreadyExists,
            AppsError::Busy { .. } | AppsError::JobHoldsLock(_) | AppsError::Lock(_) => {
                Code::FailedPrecondition
            }
            AppsError::JobLog(_) | AppsError::Journal(_) => Code::Internal,
            AppsError::OwnerStopped => Code::Unavailable,
        };
        status(code, &err)
    }
}

impl From<RollbackRefusal> for Status {
    fn from(err: RollbackRefusal) -> Status {
        // NotFound stays "no such app": a missing release is a precondition.
        let code = match &err {
            RollbackRefusal::Target(TargetError::Ambiguous { .. }) => Code::InvalidArgument,
            _ => Code::FailedPrecondition,
        };
        status(code, &err)
    }
}

impl From<OutOfBounds> for Status {
    fn from(err: OutOfBounds) -> Status {
        status(Code::InvalidArgument, &err)
    }
}

impl From<UnknownApp> for Status {
    fn from(err: UnknownApp) -> Status {
        status(Code::NotFound, &err)
    }
}

impl From<NameError> for Status {
    fn from(err: NameError) -> Status {
        status(Code::InvalidArgument, &err)
    }
}

impl From<InvalidJobId> for Status {
    fn from(err: InvalidJobId) -> Status {
        status(Code::InvalidArgument, &err)
    }
}

impl From<EnvError> for Status {
    fn from(err: EnvError) -> Status {
        status(Code::InvalidArgument, &err)
    }
}

impl From<EnvFileError> for Status {
    fn from(err: EnvFileError) -> Status {
        let code = match &err {
            EnvFileError::Invalid(_) => Code::InvalidArgument,
            _ => Code::FailedPrecondition,
        };
        status(code, &err)
    }
}

impl From<LockError> for Status {
    fn from(err: LockError) -> Status {
        status(Code::FailedPrecondition, &err)
    }
}

impl From<JournalError> for Status {
    fn from(err: JournalError) -> Status {
        status(Code::Internal, &err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let unknown = UnknownApp {
            app: "shop".into(),
            known: vec!["web".into()],
        };
        let s = Status::from(AppsError::from(unknown));
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "unknown app \"shop\"; this agent has: web");
        let s = Status::from(AppsError::Busy {
            app: "web".into(),
            job: "d-1".into(),
        });
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(
            s.message(),
            "app web is busy with job d-1; `hoist attach d-1` to follow it"
        );
        let s = Status::from(InvalidJobId("../x".into()));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            Status::from(AppsError::OwnerStopped).code(),
            Code::Unavailable
        );
    }
}
