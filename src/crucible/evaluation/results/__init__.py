"""Results: the row record, the aggregate over seeds and its statistics, comparison with stored baselines,
baseline storage and the DVC export."""
