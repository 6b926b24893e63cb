{{/* Name prefix of every object: the release name when it contains "otelguard". */}}
{{- define "otelguard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "agent"). */}}
{{- define "otelguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "otelguard.fullname" .ctx }}-{{ .component }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end -}}

{{/* Labels of every object of one component: (dict "ctx" $ "component" "agent"). */}}
{{- define "otelguard.labels" -}}
{{ include "otelguard.selectorLabels" . }}
app.kubernetes.io/part-of: otelguard
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* image reference of a component's values: (dict "ctx" $ "image" .Values.agent.image) */}}
{{- define "otelguard.image" -}}
{{ .image.repository }}:{{ .image.tag | default .ctx.Chart.AppVersion }}
{{- end -}}

{{/* DNS name of a component's Service: <fullname>-<component>.<namespace>.svc */}}
{{- define "otelguard.svc" -}}
{{ include "otelguard.fullname" .ctx }}-{{ .component }}.{{ .ctx.Release.Namespace }}.svc
{{- end -}}

{{/* Secret names: the existing one named in values, else the one the chart generates. */}}
{{- define "otelguard.collectorTlsSecret" -}}
{{ .Values.tls.collector.existingSecret | default (printf "%s-collector-tls" (include "otelguard.fullname" .)) }}
{{- end -}}
{{- define "otelguard.processorTlsSecret" -}}
{{ .Values.tls.processor.existingSecret | default (printf "%s-processor-tls" (include "otelguard.fullname" .)) }}
{{- end -}}
{{- define "otelguard.agentTokenSecret" -}}
{{ .Values.tokens.agent.existingSecret | default (printf "%s-agent-token" (include "otelguard.fullname" .)) }}
{{- end -}}
{{- define "otelguard.processorTokenSecret" -}}
{{ .Values.tokens.processor.existingSecret | default (printf "%s-processor-token" (include "otelguard.fullname" .)) }}
{{- end -}}
{{- define "otelguard.nodeTokensSecret" -}}
{{ .Values.tokens.nodeTokens.existingSecret | default (printf "%s-node-tokens" (include "otelguard.fullname" .)) }}
{{- end -}}

{{/* A memory quantity (Mi or Gi) in MiB. */}}
{{- define "otelguard.mib" -}}
{{- if hasSuffix "Gi" . -}}{{ mul (trimSuffix "Gi" . | atoi) 1024 }}
{{- else if hasSuffix "Mi" . -}}{{ trimSuffix "Mi" . | atoi }}
{{- else -}}{{ fail (printf "collector.resources.limits.memory %q: give it in Mi or Gi" .) }}
{{- end -}}
{{- end -}}

{{/* The processor's stages: processor.stages, with the profiles stage right after falco_rules
when processor.profiles.enabled (docs/profiles.md#profiles-in-a-cluster), the risk stage right
before incidents (else last) when risk.enabled (docs/risk.md#in-the-chart) and the response
stage last when response.enabled (docs/response.md#in-the-chart). */}}
{{- define "otelguard.processorStages" -}}
{{- $p := .Values.processor }}
{{- $stages := list }}
{{- $placed := false }}
{{- $risk := include "otelguard.riskStage" . | fromYaml }}
{{- range $p.stages }}
{{- if and $risk (eq .type "incidents") }}
{{- $stages = append $stages $risk }}
{{- $risk = dict }}
{{- end }}
{{- $stages = append $stages . }}
{{- if and $p.profiles.enabled (eq .type "falco_rules") (not $placed) }}
{{- if not (has $p.profiles.store (list "kube" "dir")) }}
{{- fail (printf "processor.profiles.store: %q is neither kube nor dir" $p.profiles.store) }}
{{- end }}
{{- $store := dict "kind" $p.profiles.store }}
{{- if eq $p.profiles.store "kube" }}
{{- $_ := set $store "namespace" $.Release.Namespace }}
{{- end }}
{{- $config := mergeOverwrite (dict "store" $store) (deepCopy $p.profiles.config) }}
{{- $stages = append $stages (dict "type" "profiles" "name" "profiles" "config" $config) }}
{{- $placed = true }}
{{- end }}
{{- end }}
{{- if and $p.profiles.enabled (not $placed) }}
{{- fail "processor.profiles.enabled: processor.stages has no falco_rules stage to follow" }}
{{- end }}
{{- if $risk }}
{{- $stages = append $stages $risk }}
{{- end }}
{{- if .Values.response.enabled }}
{{- $config := dict "policies" (list "/etc/otelguard/policies") "requests" "kube" "namespace" $.Release.Namespace "execute" "cluster" }}
{{- $stages = append $stages (dict "type" "response" "name" "response" "config" (mergeOverwrite $config (deepCopy .Values.response.config))) }}
{{- end }}
{{- toYaml $stages }}
{{- end -}}

{{/* The risk stage when risk.enabled (as YAML; empty otherwise). */}}
{{- define "otelguard.riskStage" -}}
{{- if .Values.risk.enabled }}
{{- range .Values.risk.analysers }}
{{- if eq . "packages" }}
{{- fail "risk.analysers: packages resolves paths through the node's /proc, which the processor Deployment does not have (docs/risk.md#limits); use grants and reach" }}
{{- else if not (has . (list "grants" "reach")) }}
{{- fail (printf "risk.analysers: unknown analyser %q (grants, reach)" .) }}
{{- end }}
{{- end }}
{{- if not .Values.risk.analysers }}
{{- fail "risk.analysers: name at least one analyser (grants, reach), or set risk.enabled false" }}
{{- end }}
{{- $config := mergeOverwrite (dict "analysers" .Values.risk.analysers) (deepCopy .Values.risk.config) }}
{{- toYaml (dict "type" "risk" "name" "risk" "config" $config) }}
{{- end }}
{{- end -}}

{{/* The read prefixes the agents' kernel filter adds for the risk analysers (one per line; empty
when risk is off): the grants analyser's, as RiskStage.read_path_prefixes() computes them (the
token directories, then grants.read_prefixes, by default the sensor's built-in list, which
otelguard.risk.grants.config.SENSOR_READ_PREFIXES holds; tests/e2e/test_helm_chart.py compares). */}}
{{- define "otelguard.riskReadPrefixes" -}}
{{- if and .Values.risk.enabled (has "grants" .Values.risk.analysers) }}
{{- $grants := get .Values.risk.config "grants" | default dict }}
{{- $builtin := list "/etc/" "/root/" "/boot/" "/proc/sys/" "/sys/fs/cgroup" "/dev/" "/var/run/secrets" "/run/secrets" "/home/" "/usr/bin/" "/usr/sbin/" "/bin/" "/sbin/" "/var/log/" }}
{{- $prefixes := concat (list "/var/run/secrets/kubernetes.io/serviceaccount/" "/run/secrets/kubernetes.io/serviceaccount/") (get $grants "read_prefixes" | default $builtin) }}
{{- range $prefixes }}
{{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The processor's ServiceAccount: the responder's when response.enabled (it also holds the
enricher's and the profile store's roles), else the read-only enricher's. */}}
{{- define "otelguard.processorServiceAccount" -}}
{{ include "otelguard.fullname" . }}-{{ if .Values.response.enabled }}responder{{ else }}k8s-enricher{{ end }}
{{- end -}}

{{/* The agent's ServiceAccount: the enricher's with agent.kubernetesApiAccess, else its own. */}}
{{- define "otelguard.agentServiceAccount" -}}
{{ include "otelguard.fullname" . }}-{{ if .Values.agent.kubernetesApiAccess }}k8s-enricher{{ else }}agent{{ end }}
{{- end -}}

{{/* "true" when the agents carry out node actions (agent --respond), else empty. */}}
{{- define "otelguard.agentResponds" -}}
{{- if and .Values.response.enabled .Values.response.nodeActions }}true{{ end }}
{{- end -}}
