-- Exact latency distributions per hour, worker and model, so percentiles (p50, p95) over any set
-- of hours are exact without reading jobs. Latencies are whole seconds of block time and take few
-- distinct values, so each hour keeps "seconds:count" pairs, ascending, space-separated
-- (`lcw_schema::rules::latency::Histogram`). Stores indexed before this migration have empty
-- histograms for past hours until `lcw replay` rebuilds them.
ALTER TABLE rollups_hourly ADD COLUMN ack_latency_hist TEXT NOT NULL DEFAULT '';
ALTER TABLE rollups_hourly ADD COLUMN completion_latency_hist TEXT NOT NULL DEFAULT '';
