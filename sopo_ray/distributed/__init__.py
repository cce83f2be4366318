"""The distributed semi-online trainer on Ray: one module per role.

The run
    driver.py        `Driver`: one alignment run as a flat list of named stages, then `close()`
    pool.py          `RolloutPool`: starts, watches, replaces and resizes the rollout actors
    watch.py         `PipelineWatch`: queue recovery and fault triage while the run is going
    resume.py        exact resume: the pipeline state a checkpoint holds, saved and restored side by side
    preflight.py     paths, run-directory state and memory, checked before anything starts
The schedule and its data
    schedule.py      `SchedulePlan`: the semi-online rule (caption stream, tickets, versions, staleness)
    ticket_board.py  `TicketBoard`: the replay queue's state machine, without Ray
    group.py         `RolloutGroup`: the one contract between rollout and learning
    seeds.py         seeds derived from the run seed
    sources.py       where a learner step's items come from, one source per objective
The actors
    rollout.py       `RolloutWorker`: claim a ticket, sync weights, sample K, score, deliver
    replay_queue.py  `ReplayQueue`: the thin async shell around the ticket board
    weights.py       `WeightStore`: versioned policy weights
    control.py       `RunControl`: status, stop flag, learner restarts, step records
    learner.py       the Ray Train learner: one preference step at a time
    learner_group.py `LearnerGroup`: the learners' TorchTrainer (DDP, restarts), fitted in a thread
Operations
    cluster.py       joining or starting Ray; what `ray job submit` uploads
    placement.py     where each actor runs, and whether the run fits the cluster
    storage.py       `RunStorage`: where the learners' checkpoints live (local disk or cloud storage)
    monitor.py       metric records and the live view; ray_logs.py: Ray's own output to the run's log
    summary.py       the one-screen end of a run; dashboard.py: dashboard.png from metrics.jsonl
"""
