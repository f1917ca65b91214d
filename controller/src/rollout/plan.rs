//! The plan of a fleet rollout: which hosts go in which phase (canary, batches), who
//! runs the migrations, the failure budget; and how the plan reads (`--dry-run`, the
//! first lines of every rollout, and its JSON).
//!
//! Hosts keep the fleet file's order. Batch and canary sizes resolve against all
//! selected hosts (`25%` of 8 hosts is 2 per batch, whether or not a canary went
//! first); each phase has at least one host.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    fleet::{Amount, Gate, Host, MigrateOn, Strategy},
    output::render,
    rollout::gates,
};

/// How a rollout moves through the hosts (flags over `[deploy]` defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    pub strategy: Strategy,
    pub batch: Amount,
    pub canary: Amount,
    pub bake: Duration,
    pub max_unhealthy: Amount,
    /// Deploys only; rollbacks never migrate forwards.
    pub migrate_on: MigrateOn,
    /// Hosts whose jobs run at once within a phase and when rolling back.
    pub concurrency: usize,
}

/// A step of the rollout: hosts that go together, then a bake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phase {
    /// `canary`, `batch 2/4`, `all`.
    pub name: String,
    /// Indexes into [`Plan::hosts`].
    pub hosts: Vec<usize>,
}

/// Who goes when.
#[derive(Clone, Debug)]
pub struct Plan<'h> {
    pub hosts: Vec<&'h Host>,
    pub phases: Vec<Phase>,
    pub shape: Shape,
    /// Failures tolerated fleet-wide; one more stops the rollout.
    pub budget: usize,
}

impl<'h> Plan<'h> {
    /// Splits `hosts` (in fleet order) by `shape`.
    pub fn new(hosts: &[&'h Host], shape: Shape) -> Plan<'h> {
        let total = hosts.len();
        let all: Vec<usize> = (0..total).collect();
        let mut phases = Vec::new();
        let batches = |rest: &[usize], phases: &mut Vec<Phase>| {
            let size = shape.batch.resolve(total).max(1);
            let count = rest.len().div_ceil(size);
            for (i, chunk) in rest.chunks(size).enumerate() {
                phases.push(Phase {
                    name: format!("batch {}/{count}", i + 1),
                    hosts: chunk.to_vec(),
                });
            }
        };
        match shape.strategy {
            Strategy::All => phases.push(Phase {
                name: "all".into(),
                hosts: all,
            }),
            Strategy::Rolling => batches(&all, &mut phases),
            Strategy::Canary => {
                let canary = shape.canary.resolve(total);
                phases.push(Phase {
                    name: "canary".into(),
                    hosts: all[..canary].to_vec(),
                });
                batches(&all[canary..], &mut phases);
            }
        }
        phases.retain(|p| !p.hosts.is_empty());
        Plan {
            hosts: hosts.to_vec(),
            phases,
            budget: shape.max_unhealthy.budget(total),
            shape,
        }
    }

    /// Who runs the migrations alone before any other host switches (`migrate_on =
    /// "first"`): the first host in plan order; when it is unreachable, the first
    /// reachable one. `None` for other `migrate_on` values.
    pub fn migrator(&self, reachable: impl Fn(usize) -> bool) -> Option<usize> {
        if self.shape.migrate_on != MigrateOn::First {
            return None;
        }
        (0..self.hosts.len()).find(|&i| reachable(i))
    }

    /// [`Plan::migrator`] when every host answers: the one the plan names.
    pub fn planned_migrator(&self) -> Option<usize> {
        self.migrator(|_| true)
    }

    fn names(&self, indexes: &[usize]) -> Vec<&str> {
        indexes
            .iter()
            .map(|&i| self.hosts[i].name.as_str())
            .collect()
    }

    /// `rolling, batches of 2, bake 5s after each` and the like.
    pub fn describe_shape(&self) -> String {
        let total = self.hosts.len();
        let batch = self.shape.batch.resolve(total);
        let bake = if self.shape.bake.is_zero() {
            "no bake".to_string()
        } else {
            format!("bake {}", render::human_duration(millis(self.shape.bake)))
        };
        match self.shape.strategy {
            Strategy::All => format!("all at once; {bake}"),
            Strategy::Rolling => format!("rolling, batches of {batch}; {bake} after each"),
            Strategy::Canary => format!(
                "canary {} then batches of {batch}; {bake} after each",
                self.shape.canary.resolve(total)
            ),
        }
    }

    /// `1 unhealthy host (max_unhealthy 25% of 4)`.
    pub fn describe_budget(&self) -> String {
        let hosts = if self.budget == 1 { "host" } else { "hosts" };
        format!(
            "{} unhealthy {hosts} tolerated (max_unhealthy {} of {})",
            self.budget,
            self.shape.max_unhealthy,
            self.hosts.len()
        )
    }

    /// The plan as text: a title line, one line per phase, then the rest of `extra`
    /// (`(label, value)` lines such as gates and the window).
    pub fn text(&self, title: &str, migrates: bool, extra: &[(&str, String)]) -> String {
        let mut text = format!("{title}: {}\n", self.describe_shape());
        let width = self.phases.iter().map(|p| p.name.len()).max().unwrap_or(0);
        for phase in &self.phases {
            let mut names: Vec<String> = self
                .names(&phase.hosts)
                .iter()
                .map(|s| s.to_string())
                .collect();
            if migrates
                && let Some(m) = self.planned_migrator()
                && phase.hosts.first() == Some(&m)
            {
                names[0].push_str(" (migrates first, alone)");
            }
            text.push_str(&format!("  {:<width$}  {}\n", phase.name, names.join(", ")));
        }
        for (label, value) in extra {
            text.push_str(&format!("  {label}: {value}\n"));
        }
        text
    }

    /// The plan as one JSON object (`"kind": "plan"`), with `extra` fields merged in.
    pub fn json(&self, migrates: bool, extra: Value) -> Value {
        let mut plan = json!({
            "kind": "plan",
            "strategy": self.shape.strategy.as_str(),
            "hosts": self.names(&(0..self.hosts.len()).collect::<Vec<_>>()),
            "phases": self.phases.iter().map(|p| json!({
                "name": p.name,
                "hosts": self.names(&p.hosts),
            })).collect::<Vec<_>>(),
            "bake_ms": millis(self.shape.bake),
            "max_unhealthy": self.shape.max_unhealthy.to_string(),
            "budget": self.budget,
            "concurrency": self.shape.concurrency,
            "migrate_on": if migrates { self.shape.migrate_on.as_str() } else { "none" },
            "migrates": if migrates {
                match self.shape.migrate_on {
                    MigrateOn::First => json!(self.planned_migrator().map(|m| &self.hosts[m].name)),
                    MigrateOn::All => json!(self.names(&(0..self.hosts.len()).collect::<Vec<_>>())),
                    MigrateOn::None => json!(null),
                }
            } else {
                json!(null)
            },
        });
        if let (Value::Object(plan), Value::Object(extra)) = (&mut plan, extra) {
            plan.extend(extra);
        }
        plan
    }
}

/// The gates as plan lines: `up <= 1 (http://...)`, or with a name
/// `Error rate < 1%: QUERY <= 0.01 (http://...)` (the plan is where the query is shown).
pub fn gate_lines(gates: &[Gate]) -> Vec<String> {
    gates
        .iter()
        .map(|g| {
            let name = g.name.as_ref().map_or(String::new(), |n| format!("{n}: "));
            let empty = match g.on_empty {
                crate::fleet::OnEmpty::Pass => ", no data passes",
                crate::fleet::OnEmpty::Fail => "",
            };
            format!(
                "{name}{} ({}{empty})",
                gates::rule(g),
                crate::output::redact::userinfo(&g.prometheus)
            )
        })
        .collect()
}

pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<Host> {
        (1..=n)
            .map(|i| Host {
                name: format!("web-{i}"),
                address: format!("127.0.0.1:{}", 7000 + i),
                groups: vec![],
                metrics: None,
            })
            .collect()
    }

    fn shape(strategy: Strategy, batch: &str, canary: &str, max: &str) -> Shape {
        Shape {
            strategy,
            batch: batch.parse().unwrap(),
            canary: canary.parse().unwrap(),
            bake: Duration::from_secs(2),
            max_unhealthy: max.parse().unwrap(),
            migrate_on: MigrateOn::First,
            concurrency: 16,
        }
    }

    fn phases(plan: &Plan) -> Vec<(String, Vec<String>)> {
        plan.phases
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.hosts
                        .iter()
                        .map(|&i| plan.hosts[i].name.clone())
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn strategies_split_the_hosts() {
        let all = hosts(10);
        let hosts: Vec<&Host> = all.iter().collect();
        let plan = Plan::new(&hosts, shape(Strategy::Rolling, "25%", "1", "0"));
        let got = phases(&plan);
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0],
            (
                "batch 1/4".into(),
                vec!["web-1".into(), "web-2".into(), "web-3".into()]
            )
        );
        assert_eq!(got[3].1, ["web-10"]);
        assert_eq!(plan.budget, 0);

        let plan = Plan::new(&hosts, shape(Strategy::Canary, "4", "10%", "20%"));
        let got = phases(&plan);
        assert_eq!(got[0], ("canary".into(), vec!["web-1".into()]));
        assert_eq!(got[1].0, "batch 1/3");
        assert_eq!(got[1].1, ["web-2", "web-3", "web-4", "web-5"]);
        assert_eq!(got[3].1, ["web-10"]);
        assert_eq!(plan.budget, 2);

        let plan = Plan::new(&hosts, shape(Strategy::All, "1", "1", "100%"));
        assert_eq!(
            phases(&plan),
            [(
                "all".to_string(),
                (1..=10).map(|i| format!("web-{i}")).collect::<Vec<_>>()
            )]
        );
        assert_eq!(plan.budget, 10);

        // A canary of everything leaves no batches.
        let two: Vec<&Host> = all.iter().take(2).collect();
        let plan = Plan::new(&two, shape(Strategy::Canary, "1", "100%", "0"));
        assert_eq!(
            phases(&plan),
            [(
                "canary".to_string(),
                vec!["web-1".to_string(), "web-2".to_string()]
            )]
        );
    }

    #[test]
    fn the_first_reachable_host_migrates() {
        let all = hosts(3);
        let hosts: Vec<&Host> = all.iter().collect();
        let plan = Plan::new(&hosts, shape(Strategy::Rolling, "1", "1", "0"));
        assert_eq!(plan.planned_migrator(), Some(0));
        assert_eq!(plan.migrator(|i| i != 0), Some(1));
        assert_eq!(plan.migrator(|_| false), None);
        let mut every = shape(Strategy::Rolling, "1", "1", "0");
        every.migrate_on = MigrateOn::All;
        assert_eq!(Plan::new(&hosts, every).planned_migrator(), None);
    }

    #[test]
    fn plan_text_and_json() {
        let all = hosts(3);
        let hosts: Vec<&Host> = all.iter().collect();
        let plan = Plan::new(&hosts, shape(Strategy::Canary, "1", "1", "1"));
        let text = plan.text(
            "deploy web main to 3 hosts",
            true,
            &[("budget", plan.describe_budget())],
        );
        assert_eq!(
            text,
            "deploy web main to 3 hosts: canary 1 then batches of 1; bake 2.0s after each\n\
             \x20 canary     web-1 (migrates first, alone)\n\
             \x20 batch 1/2  web-2\n\
             \x20 batch 2/2  web-3\n\
             \x20 budget: 1 unhealthy host tolerated (max_unhealthy 1 of 3)\n"
        );
        let json = plan.json(true, json!({"app": "web"}));
        assert_eq!(json["kind"], "plan");
        assert_eq!(json["migrates"], "web-1");
        assert_eq!(json["phases"][1]["hosts"][0], "web-2");
        assert_eq!(json["app"], "web");
        assert_eq!(json["bake_ms"], 2000);
        let rollback = plan.json(false, json!({}));
        assert_eq!(rollback["migrates"], Value::Null);
    }

    #[test]
    fn gate_lines_show_the_name_the_rule_and_on_empty() {
        use crate::fleet::OnEmpty;
        let plain = Gate {
            name: None,
            prometheus: "http://ops:s3cret@prom:9090".into(),
            query: "up".into(),
            max: 1.0,
            on_empty: OnEmpty::Fail,
        };
        let named = Gate {
            name: Some("Error rate < 1%".into()),
            query: "sum(rate(e[5m])) / sum(rate(r[5m]))".into(),
            max: 0.01,
            on_empty: OnEmpty::Pass,
            ..plain.clone()
        };
        assert_eq!(
            gate_lines(&[plain, named]),
            [
                "up <= 1 (http://ops:***@prom:9090)",
                "Error rate < 1%: sum(rate(e[5m])) / sum(rate(r[5m])) <= 0.01 \
                 (http://ops:***@prom:9090, no data passes)",
            ]
        );
    }
}
