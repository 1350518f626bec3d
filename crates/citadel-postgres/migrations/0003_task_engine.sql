-- The task engine: worker identity, priorities, a per-merchant concurrency
-- limit, fair claims across merchants and wake-ups by NOTIFY.

-- One row per start of a worker. The id is new on every start, so a
-- restarted worker never owns the leases of its previous run; name is the
-- stable name from the worker's configuration.
CREATE TABLE workers (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at timestamptz
);

CREATE INDEX workers_started_at ON workers (started_at DESC);

-- Higher runs first among a merchant's due tasks. The claim probes each of
-- the ten levels on its own, so the range is fixed.
ALTER TABLE scheduled_tasks
    ADD COLUMN priority smallint NOT NULL DEFAULT 0,
    ADD CONSTRAINT scheduled_tasks_priority_check CHECK (priority BETWEEN 0 AND 9);

-- At most this many running tasks per merchant; NULL means no limit.
ALTER TABLE merchants
    ADD COLUMN max_running_tasks integer,
    ADD CONSTRAINT merchants_max_running_tasks_check CHECK (max_running_tasks > 0);

-- Serves the fair claim: each merchant's due pending tasks in claim order.
CREATE INDEX scheduled_tasks_pending_merchant
    ON scheduled_tasks (merchant_id, priority DESC, run_at, id)
    WHERE status = 'pending';

-- Serves counting a merchant's running tasks against its limit.
CREATE INDEX scheduled_tasks_running_merchant
    ON scheduled_tasks (merchant_id)
    WHERE status = 'running';

-- Serves pruning finished tasks by age.
CREATE INDEX scheduled_tasks_finished_updated_at
    ON scheduled_tasks (updated_at)
    WHERE status IN ('completed', 'cancelled');

-- Serves pruning processed events by age.
CREATE INDEX processed_events_received_at ON processed_events (received_at);

-- Sends one notification on channel citadel_tasks per inserting statement
-- that adds a task due now. PostgreSQL delivers it at commit and folds equal
-- notifications of one transaction into one, so a bulk insert wakes each
-- listening worker once.
CREATE FUNCTION citadel_notify_due_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE status = 'pending' AND run_at <= now()) THEN
        PERFORM pg_notify('citadel_tasks', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER scheduled_tasks_notify_due
    AFTER INSERT ON scheduled_tasks
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION citadel_notify_due_tasks();
