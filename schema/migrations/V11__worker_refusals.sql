-- Jobs lcw's worker refused, and why. Written by the worker alone, one row per (worker, job),
-- kept beside the outbox: the worker's own record, not a projection of the chain; replay
-- leaves it alone. `lcw status`, the metrics and the API report from it.
--   step:   what refused it (prompt, key, model, ack, deadline, funds, node, ...)
--   final:  1 when the job will not be served by this worker; 0 while it may still be (a queue
--           that shortens, a balance topped up)
--   acked:  1 when the job had been acked before it was given up (the operator should look:
--           a timeout slash follows)
CREATE TABLE worker_refusals (
    worker     BLOB NOT NULL,
    job_id     INTEGER NOT NULL,
    step       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    final      INTEGER NOT NULL CHECK (final IN (0, 1)),
    acked      INTEGER NOT NULL CHECK (acked IN (0, 1)),
    first_at   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (worker, job_id)
) WITHOUT ROWID;
CREATE INDEX worker_refusals_recent ON worker_refusals (worker, updated_at);
