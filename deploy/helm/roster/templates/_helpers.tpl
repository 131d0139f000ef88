{{- define "roster.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "roster.headless" -}}
{{- printf "%s-headless" (include "roster.fullname" .) -}}
{{- end -}}

{{- define "roster.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "roster.labels" -}}
{{ include "roster.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "roster.voters" -}}
{{- sub (int .Values.replicas) (int .Values.observers) -}}
{{- end -}}

{{/* The ensemble: N=<pod>.<headless>.<ns>.svc.<domain>:quorum:election[:observer], N = ordinal + 1. */}}
{{- define "roster.servers" -}}
{{- $full := include "roster.fullname" . -}}
{{- $voters := int (include "roster.voters" .) -}}
{{- $list := list -}}
{{- range $i := until (int .Values.replicas) -}}
{{- $host := printf "%s-%d.%s.%s.svc.%s" $full $i (include "roster.headless" $) $.Release.Namespace $.Values.clusterDomain -}}
{{- $entry := printf "%d=%s:%d:%d" (add1 $i) $host (int $.Values.ports.quorum) (int $.Values.ports.election) -}}
{{- if ge $i $voters }}{{ $entry = printf "%s:observer" $entry }}{{ end -}}
{{- $list = append $list $entry -}}
{{- end -}}
{{- toJson $list -}}
{{- end -}}
