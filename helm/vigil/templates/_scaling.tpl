{{/* The scale-up and scale-down behaviour both autoscalers use: up in a minute, down
one pod per period after a long stabilization, because every removal is a drain. */}}
{{- define "vigil.scalingBehavior" -}}
scaleUp:
  stabilizationWindowSeconds: {{ .scaleUp.stabilizationWindowSeconds }}
  selectPolicy: Max
  policies:
    - type: Pods
      value: {{ .scaleUp.pods }}
      periodSeconds: {{ .scaleUp.periodSeconds }}
scaleDown:
  stabilizationWindowSeconds: {{ .scaleDown.stabilizationWindowSeconds }}
  selectPolicy: Min
  policies:
    - type: Pods
      value: {{ .scaleDown.pods }}
      periodSeconds: {{ .scaleDown.periodSeconds }}
{{- end -}}
