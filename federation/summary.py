"""Flags of a worker's get_work summary (``shard.scheduler.SchedulerCore.worker_summaries``),
shared by the shard that sends summaries and the router that reads them (``router.summaries``)."""

#: Luigi does not treat the worker as trivial (it has PENDING tasks needing resources, or it is
#: an assistant): its choice depends on resources over all shards
SUMMARY_NONTRIVIAL = 1
#: its best task is batchable for it (it registered a batcher for the family)
SUMMARY_BATCH = 2
#: it runs a batch there, which get_work with ``current_tasks`` may reset as orphaned
SUMMARY_BATCH_RUNNING = 4
