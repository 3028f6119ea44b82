//! The controller's replicated state (RocketMQ 5's `ReplicasInfoManager`, RIP-44): per broker
//! group (`brokerName`) its replicas (controller-assigned broker ids and addresses), the master,
//! the master epoch, the SyncStateSet (the replicas caught up with the master) and its epoch.
//!
//! Pure: no I/O, no clocks. Every change is a [`Command`] that the Raft log carries; applying
//! the same commands in the same order gives the same state on every controller. A command
//! carries the epochs it was planned against and [`ReplicasInfo::apply`] re-checks them, so a
//! command planned on a state that changed before it committed is refused, never half-applied.
//! What depends on time (which replicas are alive) is decided before proposing, by the leader
//! ([`ReplicasInfo::plan_elect`] takes the liveness as a predicate) and travels in the command
//! as its result (the chosen master), never re-evaluated when applied.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::remoting::response as resp;

/// The id the first replica of a group gets (Java's `MixAll.FIRST_SLAVE_ID`); controller ids
/// are never 0 (0 is what the master registers with at the nameservers).
pub const FIRST_BROKER_ID: u64 = 1;

/// A refused request: RocketMQ response code and a remark saying what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: i32,
    pub remark: String,
}

fn refused<T>(code: i32, remark: impl Into<String>) -> Result<T, Refused> {
    Err(Refused {
        code,
        remark: remark.into(),
    })
}

/// One replica of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// `ip:port` of the broker.
    pub address: String,
    /// What the broker proved its identity with when it applied for the id (Java: `address;time`).
    pub register_check_code: String,
}

/// One broker group (`brokerName`): Java's `BrokerReplicaInfo` and `SyncStateInfo` together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerGroup {
    pub cluster_name: String,
    pub broker_name: String,
    /// Replicas by controller-assigned broker id.
    pub replicas: BTreeMap<u64, Replica>,
    /// The master's broker id; `None` before the first election or after the master died
    /// with no one in the SyncStateSet to take over.
    pub master: Option<u64>,
    /// Bumped on every master change (also to "none"). 0 until the first election.
    pub master_epoch: u32,
    /// The replicas caught up with the master (the master included).
    pub sync_state_set: BTreeSet<u64>,
    /// Bumped on every SyncStateSet change (an election resets the set and bumps it too).
    pub sync_state_set_epoch: u32,
}

impl BrokerGroup {
    /// The next id a new replica would be given.
    pub fn next_broker_id(&self) -> u64 {
        self.replicas
            .keys()
            .next_back()
            .map_or(FIRST_BROKER_ID, |id| id + 1)
    }

    /// The master's address, if there is a master.
    pub fn master_address(&self) -> Option<&str> {
        self.master
            .and_then(|id| self.replicas.get(&id))
            .map(|r| r.address.as_str())
    }
}

/// A change to the state, as the Raft log carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A broker takes `broker_id` in its group (creating the group with its first replica).
    ApplyBrokerId {
        cluster_name: String,
        broker_name: String,
        broker_id: u64,
        address: String,
        register_check_code: String,
    },
    /// A registered replica came back on another address.
    UpdateBrokerAddress {
        broker_name: String,
        broker_id: u64,
        address: String,
    },
    /// The master at `master_epoch` replaces the SyncStateSet at `sync_state_set_epoch`.
    AlterSyncStateSet {
        broker_name: String,
        master: u64,
        master_epoch: u32,
        sync_state_set_epoch: u32,
        new_set: BTreeSet<u64>,
    },
    /// The group planned at `master_epoch` (and, when set, `sync_state_set_epoch`) gets
    /// `new_master` (`None`: the master is gone and no replica may take over). The SyncStateSet
    /// epoch is what lets a fenced candidate know that an election planned for it can no
    /// longer commit once the set changed (see `node`'s fencing); commands of older logs lack
    /// it.
    ElectMaster {
        broker_name: String,
        master_epoch: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sync_state_set_epoch: Option<u32>,
        new_master: Option<u64>,
    },
    /// Forgets a whole group (`broker_ids` empty) or some of its replicas.
    CleanBrokerData {
        broker_name: String,
        broker_ids: BTreeSet<u64>,
    },
}

/// What an applied command changed, for the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    BrokerId { broker_id: u64 },
    AddressUpdated,
    SyncStateSet { epoch: u32 },
    Master(MasterView),
    Cleaned,
}

/// A group's master as responses report it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MasterView {
    pub master: Option<u64>,
    pub address: Option<String>,
    pub master_epoch: u32,
    pub sync_state_set_epoch: u32,
}

/// What a replica reports in its heartbeats, which an election ranks candidates by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CandidateInfo {
    /// The last epoch in the replica's commitlog.
    pub epoch: u32,
    /// Its commitlog's max physical offset.
    pub max_offset: u64,
    /// `brokerElectionPriority`: lower wins among equals.
    pub election_priority: i32,
}

/// An election to run, as the request asked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectRequest {
    pub broker_name: String,
    /// The broker asking (broker-triggered, or the admin's `-i`); `None` when the controller
    /// itself elects after the master stopped heartbeating.
    pub broker_id: Option<u64>,
    /// `designateElect`: take `broker_id` if it is eligible, and nothing else.
    pub designate: bool,
}

/// The outcome of planning an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectPlan {
    /// Propose this command.
    Propose(Command),
    /// The current master stays (Java answers CONTROLLER_MASTER_STILL_EXIST with its view).
    MasterStillExists(MasterView),
}

/// Every broker group: the whole replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicasInfo {
    pub groups: BTreeMap<String, BrokerGroup>,
}

impl ReplicasInfo {
    /// The group named `broker_name`.
    pub fn group(&self, broker_name: &str) -> Option<&BrokerGroup> {
        self.groups.get(broker_name)
    }

    /// The id a broker of `broker_name` should apply for next.
    pub fn next_broker_id(&self, broker_name: &str) -> u64 {
        self.group(broker_name)
            .map_or(FIRST_BROKER_ID, BrokerGroup::next_broker_id)
    }

    /// A group's master as responses report it.
    pub fn master_view(&self, broker_name: &str) -> Option<MasterView> {
        let group = self.group(broker_name)?;
        Some(MasterView {
            master: group.master,
            address: group.master_address().map(str::to_string),
            master_epoch: group.master_epoch,
            sync_state_set_epoch: group.sync_state_set_epoch,
        })
    }

    /// Checks an id application before proposing it (the same checks [`Self::apply`] repeats).
    pub fn check_apply_broker_id(&self, command: &Command) -> Result<(), Refused> {
        self.clone().apply(command).map(|_| ())
    }

    /// Plans an election of `request` with `alive` telling which replicas heartbeat and
    /// `info` what they reported (Java's `DefaultElectPolicy`): the SyncStateSet first, all
    /// replicas only when `unclean` (`enableElectUncleanMaster`); an alive old master stays
    /// unless another broker is designated; otherwise the best (epoch, max offset) wins, then
    /// the lowest election priority, then the lowest id.
    pub fn plan_elect(
        &self,
        request: &ElectRequest,
        unclean: bool,
        alive: &dyn Fn(u64) -> bool,
        info: &dyn Fn(u64) -> Option<CandidateInfo>,
    ) -> Result<ElectPlan, Refused> {
        let Some(group) = self.group(&request.broker_name) else {
            return refused(
                resp::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
                format!(
                    "broker group {} has not been registered",
                    request.broker_name
                ),
            );
        };
        let propose = |new_master: Option<u64>| {
            Ok(ElectPlan::Propose(Command::ElectMaster {
                broker_name: group.broker_name.clone(),
                master_epoch: group.master_epoch,
                sync_state_set_epoch: Some(group.sync_state_set_epoch),
                new_master,
            }))
        };
        if let Some(id) = request.broker_id {
            if !group.replicas.contains_key(&id) {
                return refused(
                    resp::CONTROLLER_ELECT_MASTER_FAILED,
                    format!("broker id {id} is not a replica of {}", group.broker_name),
                );
            }
        }
        // The first election of a group: whoever asks first becomes master.
        if group.master_epoch == 0 {
            if let Some(id) = request.broker_id {
                if alive(id) {
                    return propose(Some(id));
                }
            }
        }
        let designated = if request.designate {
            request.broker_id
        } else {
            None
        };
        let mut tiers = vec![&group.sync_state_set];
        let all: BTreeSet<u64> = group.replicas.keys().copied().collect();
        if unclean {
            tiers.push(&all);
        }
        let mut chosen = None;
        for tier in tiers {
            let candidates: Vec<u64> = tier
                .iter()
                .copied()
                .filter(|id| group.replicas.contains_key(id) && alive(*id))
                .collect();
            if candidates.is_empty() {
                continue;
            }
            if let Some(old) = group.master {
                if candidates.contains(&old) && designated.is_none_or(|d| d == old) {
                    chosen = Some(old);
                    break;
                }
            }
            if let Some(d) = designated {
                chosen = candidates.contains(&d).then_some(d);
                break;
            }
            chosen = candidates.iter().copied().min_by_key(|id| {
                let c = info(*id).unwrap_or_default();
                (
                    std::cmp::Reverse(c.epoch),
                    std::cmp::Reverse(c.max_offset),
                    c.election_priority,
                    *id,
                )
            });
            break;
        }
        match chosen {
            Some(id) if Some(id) == group.master => Ok(ElectPlan::MasterStillExists(
                self.master_view(&group.broker_name).unwrap_or_default(),
            )),
            Some(id) => propose(Some(id)),
            None if request.broker_id.is_none() && group.master.is_some() => propose(None),
            None => refused(
                resp::CONTROLLER_ELECT_MASTER_FAILED,
                format!(
                    "no eligible replica of {} is alive (SyncStateSet {:?}{})",
                    group.broker_name,
                    group.sync_state_set,
                    if unclean {
                        ", unclean election allowed"
                    } else {
                        ""
                    }
                ),
            ),
        }
    }

    /// Applies `command`; a command whose preconditions no longer hold is refused and changes
    /// nothing.
    pub fn apply(&mut self, command: &Command) -> Result<Applied, Refused> {
        match command {
            Command::ApplyBrokerId {
                cluster_name,
                broker_name,
                broker_id,
                address,
                register_check_code,
            } => {
                let Some(group) = self.groups.get_mut(broker_name) else {
                    if *broker_id != FIRST_BROKER_ID {
                        return refused(
                            resp::CONTROLLER_BROKER_ID_INVALID,
                            format!(
                                "broker group {broker_name} is not registered yet; its first \
                                 replica must apply for id {FIRST_BROKER_ID}, not {broker_id}"
                            ),
                        );
                    }
                    let mut replicas = BTreeMap::new();
                    replicas.insert(
                        *broker_id,
                        Replica {
                            address: address.clone(),
                            register_check_code: register_check_code.clone(),
                        },
                    );
                    self.groups.insert(
                        broker_name.clone(),
                        BrokerGroup {
                            cluster_name: cluster_name.clone(),
                            broker_name: broker_name.clone(),
                            replicas,
                            master: None,
                            master_epoch: 0,
                            sync_state_set: BTreeSet::new(),
                            sync_state_set_epoch: 0,
                        },
                    );
                    return Ok(Applied::BrokerId {
                        broker_id: *broker_id,
                    });
                };
                if group.cluster_name != *cluster_name {
                    return refused(
                        resp::CONTROLLER_INVALID_REQUEST,
                        format!(
                            "broker group {broker_name} belongs to cluster {}, not {cluster_name}",
                            group.cluster_name
                        ),
                    );
                }
                match group.replicas.get(broker_id) {
                    Some(r) if r.register_check_code != *register_check_code => refused(
                        resp::CONTROLLER_BROKER_ID_INVALID,
                        format!(
                            "broker id {broker_id} of {broker_name} is taken by {}",
                            r.address
                        ),
                    ),
                    Some(_) => Ok(Applied::BrokerId {
                        broker_id: *broker_id,
                    }),
                    None if *broker_id == 0 => refused(
                        resp::CONTROLLER_BROKER_ID_INVALID,
                        "broker id 0 is not assignable in controller mode",
                    ),
                    None => {
                        group.replicas.insert(
                            *broker_id,
                            Replica {
                                address: address.clone(),
                                register_check_code: register_check_code.clone(),
                            },
                        );
                        Ok(Applied::BrokerId {
                            broker_id: *broker_id,
                        })
                    }
                }
            }
            Command::UpdateBrokerAddress {
                broker_name,
                broker_id,
                address,
            } => {
                let replica = self
                    .groups
                    .get_mut(broker_name)
                    .and_then(|g| g.replicas.get_mut(broker_id));
                match replica {
                    Some(r) => {
                        r.address = address.clone();
                        Ok(Applied::AddressUpdated)
                    }
                    None => refused(
                        resp::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
                        format!("broker id {broker_id} of {broker_name} is not registered"),
                    ),
                }
            }
            Command::AlterSyncStateSet {
                broker_name,
                master,
                master_epoch,
                sync_state_set_epoch,
                new_set,
            } => {
                let Some(group) = self.groups.get_mut(broker_name) else {
                    return refused(
                        resp::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
                        format!("broker group {broker_name} has no metadata"),
                    );
                };
                if group.master != Some(*master) {
                    return refused(
                        resp::CONTROLLER_INVALID_MASTER,
                        format!(
                            "the master of {broker_name} is {:?}, not {master}",
                            group.master
                        ),
                    );
                }
                if group.master_epoch != *master_epoch {
                    return refused(
                        resp::CONTROLLER_FENCED_MASTER_EPOCH,
                        format!(
                            "the master epoch of {broker_name} is {}, not {master_epoch}",
                            group.master_epoch
                        ),
                    );
                }
                if group.sync_state_set_epoch != *sync_state_set_epoch {
                    return refused(
                        resp::CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH,
                        format!(
                            "the SyncStateSet epoch of {broker_name} is {}, not {sync_state_set_epoch}",
                            group.sync_state_set_epoch
                        ),
                    );
                }
                if let Some(unknown) = new_set.iter().find(|id| !group.replicas.contains_key(id)) {
                    return refused(
                        resp::CONTROLLER_INVALID_REPLICAS,
                        format!("replica {unknown} of {broker_name} does not exist"),
                    );
                }
                if !new_set.contains(master) {
                    return refused(
                        resp::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
                        format!("the new SyncStateSet must contain the master {master}"),
                    );
                }
                if *new_set == group.sync_state_set {
                    return refused(
                        resp::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
                        "the new SyncStateSet equals the current one",
                    );
                }
                group.sync_state_set = new_set.clone();
                group.sync_state_set_epoch += 1;
                Ok(Applied::SyncStateSet {
                    epoch: group.sync_state_set_epoch,
                })
            }
            Command::ElectMaster {
                broker_name,
                master_epoch,
                sync_state_set_epoch,
                new_master,
            } => {
                let Some(group) = self.groups.get_mut(broker_name) else {
                    return refused(
                        resp::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
                        format!("broker group {broker_name} has not been registered"),
                    );
                };
                if group.master_epoch != *master_epoch {
                    return refused(
                        resp::CONTROLLER_FENCED_MASTER_EPOCH,
                        format!(
                            "the master of {broker_name} changed meanwhile (epoch {}, planned at {master_epoch})",
                            group.master_epoch
                        ),
                    );
                }
                if let Some(planned) = sync_state_set_epoch {
                    if group.sync_state_set_epoch != *planned {
                        return refused(
                            resp::CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH,
                            format!(
                                "the SyncStateSet of {broker_name} changed meanwhile (epoch {}, planned at {planned})",
                                group.sync_state_set_epoch
                            ),
                        );
                    }
                }
                if let Some(id) = new_master {
                    if !group.replicas.contains_key(id) {
                        return refused(
                            resp::CONTROLLER_ELECT_MASTER_FAILED,
                            format!("broker id {id} is not a replica of {broker_name}"),
                        );
                    }
                    group.sync_state_set = BTreeSet::from([*id]);
                    group.sync_state_set_epoch += 1;
                }
                // With no new master the SyncStateSet is kept: its members are still the
                // only replicas a later clean election may pick.
                group.master = *new_master;
                group.master_epoch += 1;
                let view = MasterView {
                    master: group.master,
                    address: group.master_address().map(str::to_string),
                    master_epoch: group.master_epoch,
                    sync_state_set_epoch: group.sync_state_set_epoch,
                };
                match new_master {
                    Some(_) => Ok(Applied::Master(view)),
                    None => refused(
                        resp::CONTROLLER_MASTER_NOT_AVAILABLE,
                        format!(
                            "the master of {broker_name} is gone and no replica could be elected"
                        ),
                    ),
                }
            }
            Command::CleanBrokerData {
                broker_name,
                broker_ids,
            } => {
                let Some(group) = self.groups.get_mut(broker_name) else {
                    return refused(
                        resp::CONTROLLER_INVALID_CLEAN_BROKER_METADATA,
                        format!("broker group {broker_name} does not exist"),
                    );
                };
                if broker_ids.is_empty() {
                    self.groups.remove(broker_name);
                    return Ok(Applied::Cleaned);
                }
                for id in broker_ids {
                    group.replicas.remove(id);
                    group.sync_state_set.remove(id);
                    if group.master == Some(*id) {
                        group.master = None;
                        group.master_epoch += 1;
                    }
                }
                if group.replicas.is_empty() {
                    self.groups.remove(broker_name);
                }
                Ok(Applied::Cleaned)
            }
        }
    }

    /// Whether `command` changed the state when it was applied (a refused command leaves the
    /// state as it was, except an election with no successor, which records the master's loss).
    pub fn changes_state(result: &Result<Applied, Refused>) -> bool {
        match result {
            Ok(_) => true,
            Err(r) => r.code == resp::CONTROLLER_MASTER_NOT_AVAILABLE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_id(state: &mut ReplicasInfo, id: u64) -> Result<Applied, Refused> {
        state.apply(&Command::ApplyBrokerId {
            cluster_name: "c".into(),
            broker_name: "b".into(),
            broker_id: id,
            address: format!("127.0.0.1:{}", 10910 + id),
            register_check_code: format!("127.0.0.1:{};1", 10910 + id),
        })
    }

    fn three_replicas() -> ReplicasInfo {
        let mut s = ReplicasInfo::default();
        for id in 1..=3 {
            apply_id(&mut s, id).unwrap();
        }
        s
    }

    fn elect(
        s: &mut ReplicasInfo,
        broker_id: Option<u64>,
        alive: &[u64],
        unclean: bool,
    ) -> Result<Applied, Refused> {
        let req = ElectRequest {
            broker_name: "b".into(),
            broker_id,
            designate: false,
        };
        match s.plan_elect(&req, unclean, &|id| alive.contains(&id), &|_| None)? {
            ElectPlan::Propose(cmd) => s.apply(&cmd),
            ElectPlan::MasterStillExists(v) => Ok(Applied::Master(v)),
        }
    }

    fn alter(s: &mut ReplicasInfo, set: &[u64]) -> Result<Applied, Refused> {
        let g = s.group("b").unwrap().clone();
        s.apply(&Command::AlterSyncStateSet {
            broker_name: "b".into(),
            master: g.master.unwrap(),
            master_epoch: g.master_epoch,
            sync_state_set_epoch: g.sync_state_set_epoch,
            new_set: set.iter().copied().collect(),
        })
    }

    #[test]
    fn ids_are_assigned_from_one_and_checked() {
        let mut s = ReplicasInfo::default();
        assert_eq!(s.next_broker_id("b"), 1);
        assert_eq!(
            apply_id(&mut s, 2).unwrap_err().code,
            resp::CONTROLLER_BROKER_ID_INVALID
        );
        apply_id(&mut s, 1).unwrap();
        assert_eq!(s.next_broker_id("b"), 2);
        // The same broker applying again is fine; another broker taking its id is not.
        apply_id(&mut s, 1).unwrap();
        let taken = s.apply(&Command::ApplyBrokerId {
            cluster_name: "c".into(),
            broker_name: "b".into(),
            broker_id: 1,
            address: "10.0.0.9:10911".into(),
            register_check_code: "10.0.0.9:10911;5".into(),
        });
        assert_eq!(taken.unwrap_err().code, resp::CONTROLLER_BROKER_ID_INVALID);
        let other_cluster = s.apply(&Command::ApplyBrokerId {
            cluster_name: "other".into(),
            broker_name: "b".into(),
            broker_id: 2,
            address: "10.0.0.9:10911".into(),
            register_check_code: "x".into(),
        });
        assert_eq!(
            other_cluster.unwrap_err().code,
            resp::CONTROLLER_INVALID_REQUEST
        );
    }

    #[test]
    fn first_election_takes_the_asker_then_the_epoch_fences() {
        let mut s = three_replicas();
        let Applied::Master(v) = elect(&mut s, Some(2), &[1, 2, 3], false).unwrap() else {
            panic!()
        };
        assert_eq!(
            (v.master, v.master_epoch, v.sync_state_set_epoch),
            (Some(2), 1, 1)
        );
        assert_eq!(v.address.as_deref(), Some("127.0.0.1:10912"));
        assert_eq!(s.group("b").unwrap().sync_state_set, BTreeSet::from([2]));
        // Another broker asking while the master is alive: the master stays.
        let Applied::Master(v) = elect(&mut s, Some(3), &[1, 2, 3], false).unwrap() else {
            panic!()
        };
        assert_eq!((v.master, v.master_epoch), (Some(2), 1));
        // A command planned at an old epoch is refused when applied.
        let stale = Command::ElectMaster {
            broker_name: "b".into(),
            master_epoch: 0,
            sync_state_set_epoch: None,
            new_master: Some(1),
        };
        assert_eq!(
            s.apply(&stale).unwrap_err().code,
            resp::CONTROLLER_FENCED_MASTER_EPOCH
        );
        // One planned before the SyncStateSet changed is refused too (a candidate fenced for
        // it may follow the master again), and so is nothing else.
        let planned = Command::ElectMaster {
            broker_name: "b".into(),
            master_epoch: 1,
            sync_state_set_epoch: Some(1),
            new_master: Some(3),
        };
        alter(&mut s, &[2, 3]).unwrap();
        assert_eq!(
            s.apply(&planned).unwrap_err().code,
            resp::CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH
        );
        assert_eq!(s.group("b").unwrap().master, Some(2));
        // A command of an older log (no SyncStateSet epoch) still decodes.
        let old: Command = serde_json::from_str(
            r#"{"ElectMaster":{"broker_name":"b","master_epoch":1,"new_master":3}}"#,
        )
        .unwrap();
        assert!(matches!(
            old,
            Command::ElectMaster {
                sync_state_set_epoch: None,
                ..
            }
        ));
    }

    #[test]
    fn alter_sync_state_set_only_from_the_current_master_at_its_epochs() {
        let mut s = three_replicas();
        elect(&mut s, Some(1), &[1, 2, 3], false).unwrap();
        assert_eq!(
            alter(&mut s, &[1, 2]).unwrap(),
            Applied::SyncStateSet { epoch: 2 }
        );
        let g = s.group("b").unwrap().clone();
        let mut cmd = Command::AlterSyncStateSet {
            broker_name: "b".into(),
            master: 2,
            master_epoch: g.master_epoch,
            sync_state_set_epoch: g.sync_state_set_epoch,
            new_set: BTreeSet::from([1, 2, 3]),
        };
        assert_eq!(
            s.apply(&cmd).unwrap_err().code,
            resp::CONTROLLER_INVALID_MASTER
        );
        if let Command::AlterSyncStateSet {
            master,
            master_epoch,
            ..
        } = &mut cmd
        {
            *master = 1;
            *master_epoch = 7;
        }
        assert_eq!(
            s.apply(&cmd).unwrap_err().code,
            resp::CONTROLLER_FENCED_MASTER_EPOCH
        );
        if let Command::AlterSyncStateSet {
            master_epoch,
            sync_state_set_epoch,
            ..
        } = &mut cmd
        {
            *master_epoch = g.master_epoch;
            *sync_state_set_epoch = 1;
        }
        assert_eq!(
            s.apply(&cmd).unwrap_err().code,
            resp::CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH
        );
        assert_eq!(
            alter(&mut s, &[2, 3]).unwrap_err().code,
            resp::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED
        );
        assert_eq!(
            alter(&mut s, &[1, 9]).unwrap_err().code,
            resp::CONTROLLER_INVALID_REPLICAS
        );
        assert_eq!(
            alter(&mut s, &[1, 2]).unwrap_err().code,
            resp::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED
        );
        assert_eq!(s.group("b").unwrap().sync_state_set_epoch, 2);
    }

    #[test]
    fn election_picks_from_the_sync_state_set_only_unless_unclean() {
        let mut s = three_replicas();
        elect(&mut s, Some(1), &[1, 2, 3], false).unwrap();
        alter(&mut s, &[1, 2]).unwrap();
        // Master 1 dies; 2 is in the SyncStateSet and alive, 3 is not in it.
        let Applied::Master(v) = elect(&mut s, None, &[2, 3], false).unwrap() else {
            panic!()
        };
        assert_eq!((v.master, v.master_epoch), (Some(2), 2));
        assert_eq!(s.group("b").unwrap().sync_state_set, BTreeSet::from([2]));
        // Master 2 dies too: only 3 is alive, outside the SyncStateSet. The controller records
        // that there is no master, keeps the set, and a clean election fails.
        let gone = elect(&mut s, None, &[3], false).unwrap_err();
        assert_eq!(gone.code, resp::CONTROLLER_MASTER_NOT_AVAILABLE);
        let g = s.group("b").unwrap();
        assert_eq!((g.master, g.master_epoch), (None, 3));
        assert_eq!(g.sync_state_set, BTreeSet::from([2]));
        assert_eq!(
            elect(&mut s, Some(3), &[3], false).unwrap_err().code,
            resp::CONTROLLER_ELECT_MASTER_FAILED
        );
        // With enableElectUncleanMaster, 3 may take over.
        let Applied::Master(v) = elect(&mut s, Some(3), &[3], true).unwrap() else {
            panic!()
        };
        assert_eq!((v.master, v.master_epoch), (Some(3), 4));
    }

    #[test]
    fn election_ranks_by_epoch_offset_priority_and_honours_designation() {
        let mut s = three_replicas();
        elect(&mut s, Some(1), &[1, 2, 3], false).unwrap();
        alter(&mut s, &[1, 2, 3]).unwrap();
        let info = |id: u64| {
            Some(match id {
                2 => CandidateInfo {
                    epoch: 1,
                    max_offset: 100,
                    election_priority: 0,
                },
                _ => CandidateInfo {
                    epoch: 1,
                    max_offset: 200,
                    election_priority: 0,
                },
            })
        };
        let req = ElectRequest {
            broker_name: "b".into(),
            broker_id: None,
            designate: false,
        };
        let plan = s.plan_elect(&req, false, &|id| id != 1, &info).unwrap();
        assert!(matches!(
            plan,
            ElectPlan::Propose(Command::ElectMaster {
                new_master: Some(3),
                ..
            })
        ));
        // Designating 2 while the master 1 is alive moves the master to 2.
        let req = ElectRequest {
            broker_name: "b".into(),
            broker_id: Some(2),
            designate: true,
        };
        let plan = s.plan_elect(&req, false, &|_| true, &info).unwrap();
        assert!(matches!(
            plan,
            ElectPlan::Propose(Command::ElectMaster {
                new_master: Some(2),
                ..
            })
        ));
        // Designating a dead replica elects nothing.
        let plan = s.plan_elect(&req, false, &|id| id != 2, &info);
        assert_eq!(plan.unwrap_err().code, resp::CONTROLLER_ELECT_MASTER_FAILED);
    }

    #[test]
    fn clean_removes_replicas_or_the_group_and_survives_a_round_trip() {
        let mut s = three_replicas();
        elect(&mut s, Some(1), &[1, 2, 3], false).unwrap();
        alter(&mut s, &[1, 3]).unwrap();
        let json = serde_json::to_vec(&s).unwrap();
        let back: ReplicasInfo = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, s);
        s.apply(&Command::CleanBrokerData {
            broker_name: "b".into(),
            broker_ids: BTreeSet::from([3]),
        })
        .unwrap();
        let g = s.group("b").unwrap();
        assert_eq!(g.replicas.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(g.sync_state_set, BTreeSet::from([1]));
        s.apply(&Command::CleanBrokerData {
            broker_name: "b".into(),
            broker_ids: BTreeSet::new(),
        })
        .unwrap();
        assert!(s.group("b").is_none());
        let again = s.apply(&Command::CleanBrokerData {
            broker_name: "b".into(),
            broker_ids: BTreeSet::new(),
        });
        assert_eq!(
            again.unwrap_err().code,
            resp::CONTROLLER_INVALID_CLEAN_BROKER_METADATA
        );
    }
}
