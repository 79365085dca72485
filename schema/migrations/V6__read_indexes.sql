-- Indexes for the read side (GraphQL): job pages by model and submission-time ranges. Both
-- columns are written once, when the job is submitted, so they cost the indexer one insert each.
CREATE INDEX jobs_by_model ON jobs (model_id, job_id);
CREATE INDEX jobs_by_submitted ON jobs (submitted_at);
