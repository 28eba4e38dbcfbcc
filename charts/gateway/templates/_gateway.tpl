{{/* The gateway's name: weft-ingressgateway or weft-egressgateway unless `name` is set. */}}
{{- define "gateway.name" -}}
{{- .Values.name | default (printf "weft-%sgateway" .Values.type) }}
{{- end -}}

{{/* Non-empty when the profile's (or the user's) components turn on a gateway of this type. */}}
{{- define "gateway.enabled" -}}
{{- if index .Values.components (printf "%sGateway" .Values.type) }}true{{ end }}
{{- end -}}
