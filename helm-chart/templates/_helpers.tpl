{{/* Chart name, truncated to the 63 characters Kubernetes allows in names. */}}
{{- define "stack.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; component names are "<fullname>-<component>". */}}
{{- define "stack.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<component>" for a component given as .component with the root as .root. */}}
{{- define "stack.componentName" -}}
{{- printf "%s-%s" (include "stack.fullname" .root | trunc 45 | trimSuffix "-") .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stack.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of a component (dict "root" $ "component" "search-api"). */}}
{{- define "stack.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stack.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Common labels of a component. */}}
{{- define "stack.labels" -}}
helm.sh/chart: {{ include "stack.chart" .root }}
{{ include "stack.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: {{ include "stack.name" .root }}
{{- end }}

{{/* An image reference: (dict "root" $ "image" .Values.x.image "suffix" "-cuda"). */}}
{{- define "stack.image" -}}
{{- $registry := .root.Values.imageRegistry -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- $ref := printf "%s:%s%s" .image.repository $tag (default "" .suffix) -}}
{{- if $registry }}{{ printf "%s/%s" (trimSuffix "/" $registry) $ref }}{{ else }}{{ $ref }}{{ end }}
{{- end }}

{{- define "stack.searchApi.fullname" -}}{{ include "stack.componentName" (dict "root" . "component" "search-api") }}{{- end }}
{{- define "stack.llmService.fullname" -}}{{ include "stack.componentName" (dict "root" . "component" "llm-service") }}{{- end }}
{{- define "stack.qdrant.fullname" -}}{{ include "stack.componentName" (dict "root" . "component" "qdrant") }}{{- end }}
{{- define "stack.redis.fullname" -}}{{ include "stack.componentName" (dict "root" . "component" "redis") }}{{- end }}
{{- define "stack.config.fullname" -}}{{ include "stack.componentName" (dict "root" . "component" "config") }}{{- end }}

{{/* The Secret holding the API key (and an external Redis URL). */}}
{{- define "stack.secretName" -}}
{{- if .Values.apiKey.existingSecret }}{{ .Values.apiKey.existingSecret }}{{ else }}{{ include "stack.componentName" (dict "root" . "component" "secret") }}{{ end }}
{{- end }}

{{/* Qdrant URL the search-api uses: the in-chart StatefulSet's Service or the external one. */}}
{{- define "stack.qdrantUrl" -}}
{{- if .Values.qdrant.enabled }}
{{- printf "http://%s:6333" (include "stack.qdrant.fullname" .) }}
{{- else }}
{{- required "qdrant.external.url is required when qdrant.enabled=false" .Values.qdrant.external.url }}
{{- end }}
{{- end }}

{{/* In-chart Redis URL (an external one lives in the Secret: it may carry a password). */}}
{{- define "stack.redisUrl" -}}
{{- printf "redis://%s:6379/0" (include "stack.redis.fullname" .) }}
{{- end }}

{{/* The pod and container security contexts of the stack's own containers. */}}
{{- define "stack.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}
{{- define "stack.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* Env entries of one service's keys (dict "root" $ "prefix" "SEARCH"): <PREFIX>_API_KEYS and <PREFIX>_ADMIN_KEY
     from the Secret (optional keys: an empty value leaves the API open). */}}
{{- define "stack.authEnv" -}}
- name: {{ .prefix }}_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "stack.secretName" .root }}
      key: {{ .root.Values.apiKey.secretKey }}
      optional: true
- name: {{ .prefix }}_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "stack.secretName" .root }}
      key: {{ .root.Values.apiKey.adminSecretKey }}
      optional: true
{{- end }}
