"""The runtime: runs workflow handlers durably, one actor per live execution.

Its parts, each a package with one role; imports go down this list, never up::

    front/      the front door (FrontDoor) and the Registry of the runs in this process:
                  door        lifecycle, definitions, execute, list
                  executions  the calls about one execution: ask its live actor, else read the store
                  registry    the lifecycle tables (reserved -> live -> ended; orphan -> resuming -> live)
                  recovery    runs in flight at the last stop, and runs a failed commit suspended
                  hosting     what a run needs of its engine: child workflows, actions, fallbacks, ...
                  reads       answers from the store for runs not live here
                  starts      a new execution's id, idempotency scope and first record
                  scheduler   dispatched jobs: one actor (a heap of due times, one clock timer),
                              its messages in scheduler_messages
    actor/      one live run's actor: its mailbox side (messages) and its drive task
                  (workflow_actor), and admission (how many runs are busy at once)
    handler/    what the handler sees: ctx (context) and the outside-world components
    run/        the run's journaled state, Run: a typed core and the parts stacked on it
                  (updates, steps, waits, children, compensation, ending); the journal
                  entries, the inbox, the one path that makes a signal durable
    decisions/  pure decisions on plain data, importing neither asyncio nor storage:
                  rollback (the planner), retry, history, step_options, definitions
                  (option validation), durations, outcome, schedules (cron and start_at ticks)

    vocabulary  the runtime's words as Literal types (statuses, triggers, phases, kinds)
    boundary    the one place values cross the actor boundary: copies through the codec
    clock       the time timers follow (sagaloop.testing.VirtualClock replaces it)

The runtime reaches storage only through ``storage.Store``.
"""
