"""What the tests and the benchmarks share, one module per rig:

* `inprocess_racks`: a rack and its controller in the test's own process (`running_rack`,
  `running_controller`, `start_controller`) and `until`, polling for a condition;
* `process_racks`: a rack of real processes to break (`ProcessRack`) and the loads run on it;
  `chaos_load`: the chaos run over it (kills under load); `fuzzer`, `fuzz_rig` and
  `fuzz_strategies`: every RPC fuzzed from the proto descriptors (the attacks, the rig they run
  on, what they send); `linearizability`: the checker of memory-op histories; `strangers`: a
  process that holds no secret and hammers a port;
* `fusionctl_runner`: the real `fusionctl` run as a user runs it, awaited from asyncio tests;
* `mqtt_broker`, `prometheus_server`, `etcd_server`: the real services, on free loopback ports;
  `netns`: hosts as Linux network namespaces;
* `grafana_panels`: the dashboards' queries, read as Grafana reads them; `kube_render`:
  deploy/kubernetes rendered as `kubectl apply -k` would, and `kube_checks`, what must hold of
  the rendering; `memory_reference`: the slow, obvious model of accelerator memory the
  differential tests compare against.
"""
