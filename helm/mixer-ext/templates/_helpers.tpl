{{/*
Rendered and linted by Helm's own engine in the tests (tests/deploy/helm_engine.py): any
Helm v4 template function works.  After a change run `make helm-render` and commit
helm/rendered/.
*/}}

{{- define "mixer-ext.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-mixer-ext, or the release name alone when it already holds the chart name. */}}
{{- define "mixer-ext.fullname" -}}
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

{{- define "mixer-ext.apiName" -}}
{{- printf "%s-api" (include "mixer-ext.fullname" .) -}}
{{- end -}}

{{- define "mixer-ext.roomServerName" -}}
{{- printf "%s-room-server" (include "mixer-ext.fullname" .) -}}
{{- end -}}

{{/* The room server's recordings claim: the user's, or the chart's own. */}}
{{- define "mixer-ext.recordingsClaim" -}}
{{- if .Values.roomServer.recordings.persistence.existingClaim -}}
{{- .Values.roomServer.recordings.persistence.existingClaim -}}
{{- else -}}
{{- printf "%s-recordings" (include "mixer-ext.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "mixer-ext.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mixer-ext.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "mixer-ext.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mixer-ext.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mixer-ext.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret holding credentials and RTMP URLs: the user's, or the chart's own. */}}
{{- define "mixer-ext.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- include "mixer-ext.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* MIXER_ROOM_URL: explicit, else this release's room server; never the in-pod default. */}}
{{- define "mixer-ext.roomUrl" -}}
{{- if .Values.settings.roomUrl -}}
{{- .Values.settings.roomUrl -}}
{{- else if .Values.roomServer.enabled -}}
ws://{{ include "mixer-ext.roomServerName" . }}:{{ .Values.roomServer.port }}
{{- else if eq .Values.settings.roomBackend "embedded" -}}
{{- fail "settings.roomUrl is required (or roomServer.enabled: true) for the embedded room backend" -}}
{{- end -}}
{{- end -}}

{{/* The worker's room token is minted by the init container `room-token` (job.roomToken
mint, the embedded backend): the worker then holds a token for its room only, never the
signing secret. */}}
{{- define "mixer-ext.mintsRoomToken" -}}
{{- if and (eq .Values.settings.roomBackend "embedded") (eq .Values.job.roomToken "mint") -}}
true
{{- end -}}
{{- end -}}

{{/* Where the init container writes the worker's token (MIXER_ROOM_TOKEN_FILE). */}}
{{- define "mixer-ext.roomTokenFile" -}}
/run/mixer-token/token
{{- end -}}

{{/* The init container's `mixer-ext token` arguments (the API's Jobs build the same,
mixer_ext/api/kube.py): a mixer-role token for this room and the mixer's identity, valid
as long as the Job may run (activeDeadlineSeconds), which covers every container
restart inside it. */}}
{{- define "mixer-ext.roomTokenArgs" -}}
- token
- --role
- mixer
- --room
- {{ .Values.context.room.name | quote }}
- --identity
- {{ .Values.context.identity | quote }}
- --ttl
- {{ add .Values.context.maxParticipantDuration .Values.job.deadlineMarginSeconds | quote }}
- --output
- {{ include "mixer-ext.roomTokenFile" . }}
{{- end -}}

{{/* The worker's credentials as env vars from the Secret; each key is optional.  Never
room-secret: with job.roomToken mint the init container alone reads it. */}}
{{- define "mixer-ext.secretEnv" -}}
{{- $secret := include "mixer-ext.secretName" . -}}
{{- $keys := dict "janus-api-secret" "MIXER_JANUS_API_SECRET" "janus-token" "MIXER_JANUS_TOKEN" "status-callback-url" "MIXER_STATUS_CALLBACK_URL" -}}
{{- if and (eq .Values.settings.roomBackend "embedded") (eq .Values.job.roomToken "secret") -}}
{{- $_ := set $keys "room-token" "MIXER_ROOM_TOKEN" -}}
{{- end -}}
{{- range $key, $env := $keys -}}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
      optional: true
{{ end -}}
{{- end -}}

{{/* The worker's non-secret MIXER_* settings: the chart's Job, and the API that hands
them to the Jobs it starts (mixer_ext/api/kube.py job_env). */}}
{{- define "mixer-ext.workerSettings" -}}
MIXER_LOG_LEVEL: {{ .Values.settings.logLevel | quote }}
MIXER_LOG_FORMAT: {{ .Values.settings.logFormat | quote }}
MIXER_ROOM_BACKEND: {{ .Values.settings.roomBackend | quote }}
{{- with include "mixer-ext.roomUrl" . }}
MIXER_ROOM_URL: {{ . | quote }}
{{- end }}
{{- if eq .Values.settings.roomBackend "janus" }}
MIXER_JANUS_URL: {{ required "settings.janusUrl is required when settings.roomBackend is janus" .Values.settings.janusUrl | quote }}
{{- end }}
MIXER_JITTER_BUFFER: {{ .Values.settings.jitterBuffer | quote }}
MIXER_HLS_SEGMENT_DURATION: {{ .Values.settings.hlsSegmentDuration | quote }}
MIXER_HLS_PLAYLIST_TYPE: {{ .Values.settings.hlsPlaylistType | quote }}
MIXER_HLS_LIST_SIZE: {{ .Values.settings.hlsListSize | quote }}
MIXER_RTMP_RECONNECT_MAX_DELAY: {{ .Values.settings.rtmpReconnectMaxDelay | quote }}
{{- if lt (float64 .Values.job.terminationGracePeriodSeconds) (addf .Values.settings.shutdownBudget 5) }}
{{- fail "job.terminationGracePeriodSeconds must be at least settings.shutdownBudget + 5 (the worker's shutdown after SIGTERM)" }}
{{- end }}
MIXER_SHUTDOWN_BUDGET: {{ .Values.settings.shutdownBudget | quote }}
{{- end -}}

{{/* The init containers' resources (the API's Jobs use the same, mixer_ext/api/kube.py). */}}
{{- define "mixer-ext.initResources" -}}
requests:
  cpu: 50m
  memory: 64Mi
limits:
  memory: 128Mi
{{- end -}}
