"""Granted vs used (docs/risk.md#granted-vs-used): which permissions a workload holds and never
exercised. ``config`` (its section of the ``risk`` stage), ``ledger`` (granted and used per
workload, the verdicts), ``suggest`` (the least-privilege patches), ``analyser`` (the
:class:`~otelguard.risk.analyser.Analyser` the stage runs).

Per workload (one container of one controller: the profiles stage's key, so every replica
counts) the ledger keeps what was **granted** and what was **used**:

- capabilities: granted = the pod spec's ``securityContext.capabilities.add`` (the enricher's
  ``otelguard.k8s.pod.added_capabilities``) and every process's effective set
  (``otelguard.process.cap_effective`` of exec, open, connect and capability records, so
  processes older than the agent count too); used = a *granted* ``cap_capable`` check
  (``otelguard.privilege.capability_use`` with result 0). ``CAP_SYS_ADMIN`` checks are not read
  (the kernel checks it without audit in every root process's memory accounting,
  docs/profiles.md#the-model); its uses are a successful unshare of a namespace that needs it,
  setns and mount, as in the profiles stage;
- the service-account token: granted = a volume mount at
  ``/var/run/secrets/kubernetes.io/serviceaccount`` in ``otelguard.k8s.container.mounts``; used =
  an open of a file under it (``/run/secrets/...`` too), with connections to the API server as
  further evidence (the enricher names the API server's peer ``default/kubernetes``);
- hostPath mounts: granted = a mount whose source is not a kubelet volume directory; used = an
  open, exec or change of a path under its container path. Read-only opens reach the processor
  only under the sensor's read prefixes (``read_prefixes``, the kernel filter's list), so a
  hostPath outside them is judged on writes alone (a writable mount unwritten: ``readOnly``);
  a read-only mount outside them cannot be judged and is said so (``unverifiable``), never
  reported unused;
- ``privileged: true``: needed when the workload used a capability outside the runtime's default
  set, loaded a module, called bpf(), mounted, or opened a device node other than the
  pseudo-devices every process opens; otherwise the finding suggests ``privileged: false`` with
  exactly the capabilities it used.

A grant is reported unused only after ``learning_seconds`` of observation since the workload
was first seen (each finding says how long), once per (workload, grant); its suggestion is a
strategic-merge patch of the controller (``kubectl patch --type strategic``).

Cost: per record of the event kinds it reads, a few dict lookups on the attributes the stage
already decoded; nothing for others, no I/O, no thread. Memory: ~6 KiB per workload with the
reach analyser (measured with 1,000 workloads, docs/risk.md#memory-grants-and-reach); the
stage's ``max_workloads`` forgets the least recently seen.
"""

