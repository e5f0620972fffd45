{{/*
Names and labels shared by every template.
Kubernetes names and label values are at most 63 characters: a longer one is
cut and suffixed with a hash of the whole, so two long event names never clash.
*/}}

{{- define "event-loader.trunc63" -}}
{{- if gt (len .) 63 -}}
{{- printf "%s-%s" (trunc 54 . | trimSuffix "-") (sha256sum . | trunc 8) -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{- define "event-loader.name" -}}
{{- include "event-loader.trunc63" .Chart.Name -}}
{{- end -}}

{{- define "event-loader.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- include "event-loader.trunc63" .Release.Name -}}
{{- else -}}
{{- include "event-loader.trunc63" (printf "%s-%s" .Release.Name .Chart.Name) -}}
{{- end -}}
{{- end -}}

{{- define "event-loader.selectorLabels" -}}
app.kubernetes.io/name: {{ include "event-loader.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "event-loader.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "event-loader.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: event-loader
{{- end -}}

{{/* An event's name as a DNS label (underscores become dashes). Context: an events entry. */}}
{{- define "event-loader.eventKey" -}}
{{- include "event-loader.trunc63" (.name | replace "_" "-") -}}
{{- end -}}

{{/* Selector labels of one event's worker pods. Context: dict root, event. */}}
{{- define "event-loader.workerSelectorLabels" -}}
{{ include "event-loader.selectorLabels" .root }}
app.kubernetes.io/component: worker
event-loader.io/event: {{ include "event-loader.eventKey" .event }}
{{- end -}}

{{/* Name of one event's worker Deployment, Service, PDB and ScaledObject. Context: dict root, event. */}}
{{- define "event-loader.workerName" -}}
{{- include "event-loader.trunc63" (printf "%s-worker-%s" (include "event-loader.fullname" .root) (.event.name | replace "_" "-")) -}}
{{- end -}}

{{/* Name of one event's spec ConfigMap. Context: dict root, event. */}}
{{- define "event-loader.specConfigMap" -}}
{{- include "event-loader.trunc63" (printf "%s-spec-%s" (include "event-loader.fullname" .root) (.event.name | replace "_" "-")) -}}
{{- end -}}

{{- define "event-loader.loaderName" -}}
{{- include "event-loader.trunc63" (printf "%s-loader" (include "event-loader.fullname" .)) -}}
{{- end -}}

{{- define "event-loader.loaderSelectorLabels" -}}
{{ include "event-loader.selectorLabels" . }}
app.kubernetes.io/component: loader
{{- end -}}

{{- define "event-loader.gatewayName" -}}
{{- include "event-loader.trunc63" (printf "%s-gateway" (include "event-loader.fullname" .)) -}}
{{- end -}}

{{- define "event-loader.gatewaySelectorLabels" -}}
{{ include "event-loader.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end -}}

{{/* Service account names. Context: dict root, component (worker, loader or gateway). */}}
{{- define "event-loader.serviceAccountName" -}}
{{- $sa := index .root.Values.serviceAccount .component -}}
{{- if $sa.name -}}
{{- $sa.name -}}
{{- else if $sa.create -}}
{{- include "event-loader.trunc63" (printf "%s-%s" (include "event-loader.fullname" .root) .component) -}}
{{- else -}}
default
{{- end -}}
{{- end -}}

{{- define "event-loader.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}
{{- end -}}

{{/*
Settings every pod gets: the non-secret env values, the Kafka endpoints and
where the specs are mounted. Secrets come from envFrom (existingSecret).
*/}}
{{- define "event-loader.env" -}}
- name: LOADER_SPECS_DIR
  value: /etc/event-loader/pipelines
- name: LOADER_LOG_FORMAT
  value: json
{{- with .Values.kafka.bootstrapServers }}
- name: LOADER_KAFKA__BOOTSTRAP_SERVERS
  value: {{ . | quote }}
{{- end }}
{{- with .Values.kafka.clusters }}
- name: LOADER_KAFKA__CLUSTERS
  value: {{ toJson . | quote }}
{{- end }}
{{- with .Values.aws.sse }}
- name: LOADER_AWS__SSE
  value: {{ . | quote }}
{{- end }}
{{- with .Values.aws.sseKmsKeyId }}
{{- if ne $.Values.aws.sse "aws:kms" }}
{{- fail "aws.sseKmsKeyId is used only with SSE-KMS: set aws.sse to aws:kms" }}
{{- end }}
- name: LOADER_AWS__SSE_KMS_KEY_ID
  value: {{ . | quote }}
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{- define "event-loader.envFrom" -}}
{{- with .Values.existingSecret }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end -}}

{{/*
The loader's Secrets: existingSecret, and snowflake.existingSecret (the Snowflake
login), which no other pod gets.
*/}}
{{- define "event-loader.loaderEnvFrom" -}}
{{- with compact (list .Values.existingSecret .Values.snowflake.existingSecret) }}
envFrom:
  {{- range . }}
  - secretRef:
      name: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
The checksum of events' specs and schemas (one event: its spec and schema, as before).
Context: a list of events entries.
*/}}
{{- define "event-loader.specsChecksum" -}}
{{- $text := "" }}
{{- range . }}
{{- $text = printf "%s%s%s" $text .spec (.schema | default "") }}
{{- end }}
{{- $text | sha256sum }}
{{- end -}}

{{/*
The specs volume: each event's ConfigMap projected as pipelines/<event>.yaml
and schemas/<event>.avsc, the layout the rendered specs' schema paths expect.
Context: a list of events entries.
*/}}
{{- define "event-loader.specsVolume" -}}
- name: specs
  projected:
    sources:
      {{- range .events }}
      - configMap:
          name: {{ include "event-loader.specConfigMap" (dict "root" $.root "event" .) }}
          items:
            - key: spec.yaml
              path: pipelines/{{ .name }}.yaml
            {{- if .schema }}
            - key: schema.avsc
              path: schemas/{{ .name }}.avsc
            {{- end }}
      {{- end }}
{{- end -}}

{{/*
The Kafka TLS files (kafka.tls.existingSecret), for the pods that talk to Kafka.
Context: root. Three templates: the settings, the mount and the volume.
*/}}
{{- define "event-loader.kafkaTlsEnv" -}}
{{- if .Values.kafka.tls.existingSecret }}
- name: LOADER_KAFKA__SSL_CAFILE
  value: /etc/event-loader/kafka-tls/ca.crt
{{- if .Values.kafka.tls.clientCertificate }}
- name: LOADER_KAFKA__SSL_CERTFILE
  value: /etc/event-loader/kafka-tls/tls.crt
- name: LOADER_KAFKA__SSL_KEYFILE
  value: /etc/event-loader/kafka-tls/tls.key
{{- end }}
{{- end }}
{{- end -}}

{{- define "event-loader.kafkaTlsMount" -}}
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/event-loader/kafka-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "event-loader.kafkaTlsVolume" -}}
{{- with .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* Bootstrap servers of an event's cluster, for KEDA. Context: dict root, event. */}}
{{- define "event-loader.bootstrapServers" -}}
{{- $servers := index .root.Values.kafka.clusters .event.cluster | default "" -}}
{{- if and (not $servers) (eq .event.cluster "default") -}}
{{- $servers = .root.Values.kafka.bootstrapServers -}}
{{- end -}}
{{- required (printf "autoscaling needs the bootstrap servers of Kafka cluster %q (event %s): set kafka.bootstrapServers or kafka.clusters.%s" .event.cluster .event.name .event.cluster) $servers -}}
{{- end -}}

{{/*
Checks an events entry: rendered values may be edited by hand, and a replica
beyond the partition count would sit idle in the consumer group.
*/}}
{{- define "event-loader.checkEvent" -}}
{{- if not (and .name .topic .partitions .spec) -}}
{{- fail "each events entry needs name, topic, partitions and spec: generate them with `loader deploy render`" -}}
{{- end -}}
{{- if gt (int .replicas) (int .partitions) -}}
{{- fail (printf "event %s: replicas %d exceeds its %d partitions; use at most %d" .name (int .replicas) (int .partitions) (int .partitions)) -}}
{{- end -}}
{{- end -}}
