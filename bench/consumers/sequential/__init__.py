"""Seeds spent only where a verdict needs them: group-sequential designs over training seeds (``grid.seeds`` as a
plan of looks). ``boundaries``: the spending functions and the boundaries they give; ``design``: which comparison is
decided at which look (group-sequential Holm); ``walk``: the looks of a suite's stored runs, the cells the next look
needs."""
