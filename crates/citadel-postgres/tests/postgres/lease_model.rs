//! A model test of the claim, lease and rescue protocol: random sequences of
//! claims, heartbeats, completions, lease expiries and rescues by several
//! workers run against PostgreSQL and against a model of what each step must
//! do, and every result and every row must match the model.

use std::collections::HashMap;
use std::time::Duration;

use citadel_core::ids::TaskId;
use citadel_core::store::Store;
use citadel_core::task::{Lease, TaskStatus, TaskUpdate};
use citadel_postgres::PgStore;
use proptest::prelude::*;
use uuid::Uuid;

use super::{claim_request, due_task, insert_tasks, register, setup};

const WORKERS: usize = 3;
const TASKS: usize = 4;
const MAX_ATTEMPTS: i32 = 3;

#[derive(Debug, Clone)]
enum Step {
    Claim { worker: usize, limit: u32 },
    Heartbeat { worker: usize },
    Complete { worker: usize, lease: usize },
    Expire { task: usize },
    Rescue,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..WORKERS, 1..3u32).prop_map(|(worker, limit)| Step::Claim { worker, limit }),
        (0..WORKERS).prop_map(|worker| Step::Heartbeat { worker }),
        (0..WORKERS, 0..3usize).prop_map(|(worker, lease)| Step::Complete { worker, lease }),
        (0..TASKS).prop_map(|task| Step::Expire { task }),
        Just(Step::Rescue),
    ]
}

/// What the model expects of one task.
#[derive(Debug, Clone, PartialEq)]
enum Expected {
    Pending,
    Running { token: Uuid, expired: bool },
    Completed,
    Failed,
}

#[derive(Debug)]
struct Model {
    tasks: HashMap<TaskId, (Expected, i32)>,
    /// The leases each worker believes it holds, stale ones included.
    held: Vec<Vec<Lease>>,
}

impl Model {
    fn claimable(&self) -> usize {
        self.tasks
            .values()
            .filter(|(state, attempts)| *state == Expected::Pending && *attempts < MAX_ATTEMPTS)
            .count()
    }
}

async fn apply(store: &PgStore, model: &mut Model, step: &Step) {
    match *step {
        Step::Claim { worker, limit } => {
            let claimable = model.claimable();
            let claimed = store
                .claim_tasks(&claim_request(&format!("w{worker}"), limit))
                .await
                .unwrap();
            assert_eq!(claimed.len(), claimable.min(limit as usize), "{step:?}");
            for task in claimed {
                let (state, attempts) = model.tasks.get_mut(&task.id).unwrap();
                assert_eq!(
                    *state,
                    Expected::Pending,
                    "claimed a task that was not pending"
                );
                let lease = task.lease.unwrap();
                *state = Expected::Running {
                    token: lease.token,
                    expired: false,
                };
                *attempts += 1;
                assert_eq!(task.attempts, *attempts);
                model.held[worker].push(lease);
            }
        }
        Step::Heartbeat { worker } => {
            let renewed = store
                .heartbeat_tasks(&model.held[worker], Duration::from_secs(300))
                .await
                .unwrap();
            for lease in &model.held[worker] {
                let (state, _) = model.tasks.get_mut(&lease.task_id).unwrap();
                let current =
                    matches!(state, Expected::Running { token, .. } if *token == lease.token);
                let was_renewed = renewed.iter().any(|fresh| fresh.token == lease.token);
                assert_eq!(was_renewed, current, "heartbeat of {lease:?}");
                if current {
                    *state = Expected::Running {
                        token: lease.token,
                        expired: false,
                    };
                }
            }
        }
        Step::Complete { worker, lease } => {
            let Some(lease) = model.held[worker].get(lease).cloned() else {
                return;
            };
            let mut tx = store.begin().await.unwrap();
            let finished = tx.finish_task(&lease, &TaskUpdate::Complete).await.unwrap();
            tx.commit().await.unwrap();
            let (state, _) = model.tasks.get_mut(&lease.task_id).unwrap();
            let current = matches!(state, Expected::Running { token, .. } if *token == lease.token);
            assert_eq!(
                finished, current,
                "completion under {lease:?} with the task {state:?}"
            );
            if current {
                *state = Expected::Completed;
            }
            model.held[worker].retain(|held| held.token != lease.token);
        }
        Step::Expire { task } => {
            let id = *model.tasks.keys().nth(task).unwrap();
            sqlx::query(
                "UPDATE scheduled_tasks SET lease_expires_at = now() - interval '1 second'
                 WHERE id = $1 AND status = 'running'",
            )
            .bind(id.get())
            .execute(store.pool())
            .await
            .unwrap();
            if let Some((Expected::Running { expired, .. }, _)) = model.tasks.get_mut(&id) {
                *expired = true;
            }
        }
        Step::Rescue => {
            let rescued = store.rescue_expired_tasks().await.unwrap();
            let mut expected = 0;
            for (state, attempts) in model.tasks.values_mut() {
                if let Expected::Running { expired: true, .. } = state {
                    expected += 1;
                    *state = if *attempts >= MAX_ATTEMPTS {
                        Expected::Failed
                    } else {
                        Expected::Pending
                    };
                }
            }
            assert_eq!(rescued, expected);
        }
    }
}

async fn check_rows(store: &PgStore, model: &Model) {
    for (id, (state, attempts)) in &model.tasks {
        let task = store.task(*id).await.unwrap().unwrap();
        assert_eq!(task.attempts, *attempts, "attempts of task {id}");
        match state {
            Expected::Pending => assert_eq!(task.status, TaskStatus::Pending),
            Expected::Completed => assert_eq!(task.status, TaskStatus::Completed),
            Expected::Failed => assert_eq!(task.status, TaskStatus::Failed),
            Expected::Running { token, .. } => {
                assert_eq!(task.status, TaskStatus::Running);
                assert_eq!(task.lease.unwrap().token, *token);
            }
        }
    }
}

async fn run_steps(steps: Vec<Step>) {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|n| {
            let mut task = due_task(merchant.id, &format!("t{n}"));
            task.max_attempts = MAX_ATTEMPTS;
            task
        })
        .collect();
    let ids = insert_tasks(&store, &tasks).await;
    let mut model = Model {
        tasks: ids
            .into_iter()
            .map(|id| (id, (Expected::Pending, 0)))
            .collect(),
        held: vec![Vec::new(); WORKERS],
    };

    for step in &steps {
        apply(&store, &mut model, step).await;
        check_rows(&store, &model).await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn lease_protocol_matches_model(steps in prop::collection::vec(step(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run_steps(steps));
    }
}
