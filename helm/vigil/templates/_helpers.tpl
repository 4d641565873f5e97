{{/* Names: 52 characters at most, so a StatefulSet's pod names and their
controller-revision-hash label stay within Kubernetes' 63. */}}
{{- define "vigil.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "vigil.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "vigil.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vigil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "vigil.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "vigil.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "vigil.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vigil.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vigil.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The admin Service: headless, so each worker has a DNS name (to reach one pod's
admin API) and Prometheus' job label is this name. */}}
{{- define "vigil.adminService" -}}
{{- printf "%s-admin" (include "vigil.fullname" .) -}}
{{- end -}}

{{/* The series of this release's workers, for alert rules and the KEDA query. */}}
{{- define "vigil.metricSelector" -}}
{{- default (printf "namespace=%q,job=%q" .Release.Namespace (include "vigil.adminService" .)) .Values.monitoring.rules.selector -}}
{{- end -}}

{{- define "vigil.actuatorSelector" -}}
{{- default (printf "namespace=%q" .Release.Namespace) .Values.monitoring.rules.actuatorSelector -}}
{{- end -}}

{{- define "vigil.gracePeriod" -}}
{{- add .Values.drain.preStopSleepSeconds .Values.drain.deadlineSeconds .Values.drain.marginSeconds -}}
{{- end -}}

{{/* Values combinations that render but cannot work: refused at install. */}}
{{- define "vigil.checks" -}}
{{- if and .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled -}}
{{- fail "autoscaling: enable hpa or keda, not both (KEDA makes an HPA of its own; two would fight over the replica count)" -}}
{{- end -}}
{{- if and .Values.podDeletionCost.enabled (eq .Values.workload "StatefulSet") -}}
{{- fail "podDeletionCost: only a Deployment's scale-down reads pod-deletion-cost; a StatefulSet removes its highest ordinal (set workload: Deployment, or turn podDeletionCost off)" -}}
{{- end -}}
{{- if and .Values.persistence.enabled (eq .Values.workload "Deployment") -}}
{{- fail "persistence: a volume per pod needs workload: StatefulSet (volumeClaimTemplates)" -}}
{{- end -}}
{{- if and (eq .Values.workload "Deployment") (eq (int .Values.deployment.maxSurge) 0) (eq (int .Values.deployment.maxUnavailable) 0) -}}
{{- fail "deployment: maxSurge and maxUnavailable cannot both be 0" -}}
{{- end -}}
{{- if hasKey .Values.extraConfigFiles "vigil.toml" -}}
{{- fail "extraConfigFiles: vigil.toml is the chart's own (set config instead)" -}}
{{- end -}}
{{- end -}}

{{/* The console's labels: the same release, its own component. */}}
{{- define "vigil.consoleSelectorLabels" -}}
app.kubernetes.io/name: {{ include "vigil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: console
{{- end -}}

{{- define "vigil.consoleLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "vigil.consoleSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
