"""Sensitive reach (docs/risk.md#sensitive-reach): a workload of a lower tier connecting to a
sensitive system. ``config`` (its section of the ``risk`` stage), ``tiers`` (the tier map the
API server feeds), ``edges`` (the edges each workload was seen on), ``analyser`` (the
:class:`~otelguard.risk.analyser.Analyser` the stage runs).

Tiers come from the label ``otelguard.dev/tier`` (``label`` in the config) on namespaces and
Services, read from the API server as the k8s enricher reads them (a
:class:`~otelguard.kube.reflector.K8sSource` feeding :class:`TierMap`: namespaces,
Services and EndpointSlices, nothing per pod), plus built-in sensitive targets that carry no
label:

- the cloud metadata address (169.254.169.254, AWS's fd00:ec2::254, Alibaba's
  100.100.100.200),
- the API server: the ``default/kubernetes`` Service's ClusterIP and its endpoints,
- etcd (peer ports 2379 and 2380), the kubelet's port 10250 on any address.

A connect record (succeeded, in progress or refused alike: the attempt is the reach) finds its
target by the peer the enricher named (``otelguard.peer.k8s.namespace.name``/``service.name``),
else by its address in the map (ClusterIPs and endpoints of labelled Services). The source's
tier is its namespace's, raised to a Service's when the pod's address is one of that Service's
endpoints. An edge (source workload -> target, port) from a tier below the target's
``sensitive`` tier, never seen before, is a finding at once, in the same batch (the latency is
the pipeline's). Host processes are not sources (the node's own components talk to the kubelet,
etcd and the API server); nor is a container's loopback, unless the pod uses the node's
network.

Memory: per workload at most ``max_edges`` remembered edges (least recently seen forgotten, so
an edge forgotten and seen again is reported again; one shared object per target); the stage's
``max_workloads`` bounds the workloads.
"""

