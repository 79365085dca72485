-- The jobs of a worker that timed out, by block: the worker finds the ones that timed out while
-- it was not running (to record why) without scanning all of its jobs. Written once per job,
-- when it times out.
CREATE INDEX jobs_timed_out ON jobs (worker, timed_out_block) WHERE timed_out_block IS NOT NULL;
