"""How a run takes its steps: one module per step kind (``action``, ``effect``, ``publish``, ``wait``,
``sleep``), one for going back (``compensation``), one for a step that fails (``failure``), and what
they all share (``runner``). Each kind's ``execute`` takes the run one step on and says whether it may
go on right away; ``scheduler.STEPS`` maps the kinds to them.
"""
