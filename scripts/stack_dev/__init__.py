"""Dev tooling shared by ``scripts/`` and ``tests/`` (installed editable by the Makefile: ``-e ./scripts``).

* :mod:`stack_dev.procs`  - start a service as a real process, wait until it answers, stop it (and its
  whole process group) without ever leaving one behind;
* :mod:`stack_dev.stats`  - THE percentile every script reports (numpy's linear interpolation);
* :mod:`stack_dev.beir`   - BEIR corpus/queries/qrels readers and nDCG@k, Recall@k, P@k;
* :mod:`stack_dev.ingest` - bulk loading through the search-service's HTTP API (scripts/ingest.py's core);
* :mod:`stack_dev.load`   - the wrk load driver of bench_search.py and loop_profile.py;
* :mod:`stack_dev.llm_engines` - bench_llm.py's single-stream engines.
"""
