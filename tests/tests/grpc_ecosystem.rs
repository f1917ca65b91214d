//! The agent as ordinary gRPC tooling sees it, through Python's grpcio (the client
//! grpc_health_probe-style scripts and grpcio-reflection users run): over mutual TLS,
//! list the services by v1alpha reflection and by v1, resolve
//! `grpc.health.v1.Health/Check` from the served descriptors (grpcio-reflection's own
//! descriptor database, as grpcurl does), and call it with a message built from them.

use std::{process::Command, time::Duration};

use hoist_tests::{
    e2e,
    harness::{AgentBuilder, Pki, Who},
};

const CLIENT: &str = r#"
import json, sys
import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2 as r, reflection_pb2_grpc as rg
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

addr, ca, cert, key = sys.argv[1:5]
read = lambda p: open(p, "rb").read()
creds = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
channel = grpc.secure_channel(addr, creds)
grpc.channel_ready_future(channel).result(timeout=10)
out = {}

def services(call):
    answers = call(iter([r.ServerReflectionRequest(list_services="")]), timeout=10)
    return sorted(s.name for a in answers for s in a.list_services_response.service)

# v1alpha: grpcio-reflection's own stub.
out["v1alpha"] = services(rg.ServerReflectionStub(channel).ServerReflectionInfo)
# v1: the same messages on the wire under the v1 service name.
out["v1"] = services(channel.stream_stream(
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    request_serializer=r.ServerReflectionRequest.SerializeToString,
    response_deserializer=r.ServerReflectionResponse.FromString,
))

# Resolve the health method from the served descriptors only.
pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
method = pool.FindServiceByName("grpc.health.v1.Health").FindMethodByName("Check")
Request = message_factory.GetMessageClass(method.input_type)
Response = message_factory.GetMessageClass(method.output_type)
out["method"] = method.full_name
check = channel.unary_unary(
    "/grpc.health.v1.Health/Check",
    request_serializer=Request.SerializeToString,
    response_deserializer=Response.FromString,
)
for service in ["", "hoist.v1.Agent"]:
    answer = check(Request(service=service), timeout=10)
    out["health:" + service] = method.output_type.fields_by_name["status"].enum_type.values_by_number[answer.status].name
print(json.dumps(out))
"#;

#[tokio::test]
async fn grpcio_reflection_v1alpha_and_v1_resolve_and_call_health_check() {
    let Some(python) = e2e::require_python(
        &["grpc", "grpc_reflection.v1alpha", "grpc_health.v1"],
        "grpcio grpcio-reflection grpcio-health-checking",
        "grpcio_reflection_v1alpha_and_v1_resolve_and_call_health_check",
    ) else {
        return;
    };
    let pki = Pki::new();
    let agent = AgentBuilder::new(&pki).start().await;
    let (cert, key) = pki.identity(Who::Viewer).unwrap();
    let ca = pki.ca_dir().join("ca.pem");
    let run = |addr: &str| {
        let mut cmd = Command::new(&python);
        cmd.args(["-c", CLIENT, addr]).arg(&ca).arg(&cert).arg(&key);
        e2e::run_with_timeout(&mut cmd, None, Duration::from_secs(60)).unwrap()
    };
    let out = run(&agent.grpc);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    // Each reflection version lists itself besides the two services.
    for version in ["v1alpha", "v1"] {
        let want = serde_json::json!([
            "grpc.health.v1.Health",
            format!("grpc.reflection.{version}.ServerReflection"),
            "hoist.v1.Agent",
        ]);
        assert_eq!(json[version], want, "{json}");
    }
    assert_eq!(json["method"], "grpc.health.v1.Health.Check", "{json}");
    assert_eq!(json["health:"], "SERVING", "{json}");
    assert_eq!(json["health:hoist.v1.Agent"], "SERVING", "{json}");
}
