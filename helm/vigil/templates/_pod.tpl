{{/* The worker's environment, shared by the init container so that `vigil validate`
checks exactly what `vigil run` will load (overrides and secrets included). */}}
{{- define "vigil.env" -}}
- name: VIGIL_CONFIG
  value: /etc/vigil/vigil.toml
# Chart-owned keys: the probes and the admin Service depend on them.
- name: VIGIL__ADMIN__LISTEN
  value: "0.0.0.0:{{ .Values.ports.admin }}"
# The grace period is computed from the same value: the worker must finish before it.
- name: VIGIL__ADMIN__DRAIN_DEADLINE_SECS
  value: "{{ .Values.drain.deadlineSeconds }}"
{{- if .Values.admin.controlOnLoopback }}
- name: VIGIL__ADMIN__CONTROL_LISTEN
  value: "127.0.0.1:{{ add .Values.ports.admin 1 }}"
{{- end }}
# Alerts name the pod; static Kafka membership uses the same name.
- name: VIGIL_WORKER_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- if .Values.podDeletionCost.enabled }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}
{{- with .Values.secrets.streamKey }}
{{- if .name }}
- name: VIGIL_STREAM_KEY_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- with .Values.secrets.adminToken }}
{{- if .name }}
# The admin token, from the environment rather than a file: the worker's environment
# is out of its decode children's reach (they inherit none of it, and the worker is
# not dumpable), while a mounted file is readable by any process of the same user.
- name: VIGIL_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- with .Values.secrets.kafkaPassword }}
{{- if .name }}
- name: VIGIL_KAFKA_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- if .Values.trust.keyring.name }}
# Chart-owned: where the mounted keyring and signing key are (signed Kafka records).
- name: VIGIL__TRUST__KEYRING_FILE
  value: /etc/vigil-trust/keyring
{{- end }}
{{- if .Values.trust.workerKey.name }}
- name: VIGIL__TRUST__KEY_DIR
  value: /var/run/secrets/vigil/keys
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "vigil.volumeMounts" -}}
- name: config
  mountPath: /etc/vigil
  readOnly: true
# The root filesystem is read-only: the spool and state live here, scratch in /tmp.
- name: data
  mountPath: /var/lib/vigil
- name: tmp
  mountPath: /tmp
{{- if .Values.secrets.kafkaCA.name }}
- name: kafka-ca
  mountPath: /var/run/secrets/vigil/kafka-ca
  readOnly: true
{{- end }}
{{- if .Values.trust.keyring.name }}
- name: keyring
  mountPath: /etc/vigil-trust
  readOnly: true
{{- end }}
{{- if .Values.trust.workerKey.name }}
- name: signing-key
  mountPath: /var/run/secrets/vigil/keys
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* allowPrivilegeEscalation false sets no_new_privs, which the worker's decode
children set for themselves anyway before their own seccomp filter. */}}
{{- define "vigil.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
