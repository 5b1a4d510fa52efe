{{/* Names and labels shared by every template. */}}

{{- define "rayops.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "rayops.serviceAccountName" -}}
{{- default (printf "%s-airflow" .Release.Name) .Values.serviceAccount.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rayops.roleName" -}}
{{- printf "%s-ray-jobs" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rayops.defaultsConfigMapName" -}}
{{- printf "%s-defaults" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rayops.rayTokenSecretName" -}}
{{- default (printf "%s-ray-token" .Release.Name) .Values.rayAuth.existingSecret | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Every namespace rayops' Ray work may run in, release namespace first, as a JSON list:
the release namespace, the namespace of each kuberay profile (KubeRayProfile's default is
"default"), and rbac.extraNamespaces.
*/}}
{{- define "rayops.namespaces" -}}
{{- $namespaces := list .Release.Namespace -}}
{{- range $name, $profile := .Values.computeProfiles -}}
{{- if eq (toString (get $profile "backend")) "kuberay" -}}
{{- $namespaces = append $namespaces (default "default" (get $profile "namespace")) -}}
{{- end -}}
{{- end -}}
{{- $namespaces = concat $namespaces (.Values.rbac.extraNamespaces | default list) -}}
{{- toJson (uniq $namespaces) -}}
{{- end -}}

{{/* The platform defaults file, in the format of dag_configs/defaults.yaml. */}}
{{- define "rayops.defaultsFile" -}}
{{- $defaults := deepCopy (.Values.extraDefaults | default dict) -}}
{{- $_ := set $defaults "owner" .Values.owner -}}
{{- $_ := set $defaults "compute" .Values.compute -}}
{{- $storage := dict "root" .Values.storageRoot -}}
{{- with .Values.storageConnId }}{{ $_ := set $storage "conn_id" . }}{{ end -}}
{{- $_ := set $defaults "storage" $storage -}}
{{- with .Values.trackingConnId }}{{ $_ := set $defaults "tracking" (dict "conn_id" .) }}{{ end -}}
{{- /* A kuberay profile's clusters use this release's token Secret unless the profile names another. */ -}}
{{- $profiles := deepCopy .Values.computeProfiles -}}
{{- $secret := include "rayops.rayTokenSecretName" . -}}
{{- range $name, $profile := $profiles -}}
{{- if and (eq (toString (get $profile "backend")) "kuberay") (not (hasKey $profile "token_secret")) (ne (toString (get $profile "auth")) "disabled") -}}
{{- $_ := set $profile "token_secret" $secret -}}
{{- end -}}
{{- end -}}
{{- $_ := set $defaults "compute_profiles" $profiles -}}
{{- with .Values.security }}{{ $_ := set $defaults "security" . }}{{ end -}}
{{- toYaml $defaults -}}
{{- end -}}
