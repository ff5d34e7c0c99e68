package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// checkHA checks the ha overlay: three replicas on Redis, the autoscaler,
// the disruption budget, the network policies and the monitoring pieces.
func checkHA(t *testing.T, docs []map[string]any, dep map[string]any) {
	t.Helper()
	podLabels := get(dep, "spec", "template", "metadata", "labels")
	// The autoscaler owns the count: a replicas field would be applied
	// again by every kubectl apply, undoing its scaling.
	if r := get(dep, "spec", "replicas"); r != nil {
		t.Errorf("replicas = %v, want none (the autoscaler's minReplicas gives 3)", r)
	}
	if s := get(dep, "spec", "strategy", "type"); s != "RollingUpdate" {
		t.Errorf("strategy = %v, want RollingUpdate", s)
	}
	c := container(t, dep, proxyName)
	_, entries := envOf(c)
	for _, k := range []string{"REDIS_URL", "REDIS_PASSWORD", "SECRET_KEY", "ADMIN_PASSWORD"} {
		ref := get(entries[k], "valueFrom", "secretKeyRef")
		if get(ref, "name") != secretName || get(ref, "key") != k || get(ref, "optional") != false {
			t.Errorf("%s: want a required secretKeyRef (optional: false) to Secret %s key %s, got %v", k, secretName, k, entries[k])
		}
	}
	if len(find(docs, "PersistentVolumeClaim")) != 0 {
		t.Error("a PersistentVolumeClaim for the proxy: its state is in Redis")
	}

	// Autoscaler: the Deployment, at least the three replicas, on CPU.
	hpas := find(docs, "HorizontalPodAutoscaler")
	if len(hpas) != 1 {
		t.Fatalf("%d HorizontalPodAutoscalers, want 1", len(hpas))
	}
	hpa := hpas[0]
	if get(hpa, "apiVersion") != "autoscaling/v2" || get(hpa, "spec", "scaleTargetRef", "kind") != "Deployment" ||
		get(hpa, "spec", "scaleTargetRef", "name") != get(dep, "metadata", "name") {
		t.Errorf("HorizontalPodAutoscaler targets %v, want the Deployment (autoscaling/v2)", get(hpa, "spec", "scaleTargetRef"))
	}
	minR, _ := get(hpa, "spec", "minReplicas").(int)
	maxR, _ := get(hpa, "spec", "maxReplicas").(int)
	if minR != 3 || maxR <= minR {
		t.Errorf("HorizontalPodAutoscaler replicas %d..%d, want 3..more", minR, maxR)
	}
	cpu := false
	for _, m := range list(hpa, "spec", "metrics") {
		cpu = cpu || get(m, "resource", "name") == "cpu"
	}
	if !cpu || get(c, "resources", "requests", "cpu") == nil {
		t.Error("the autoscaler needs a cpu metric and a cpu request")
	}

	// Disruption budget: never below two replicas.
	pdbs := find(docs, "PodDisruptionBudget")
	if len(pdbs) != 1 {
		t.Fatalf("%d PodDisruptionBudgets, want 1", len(pdbs))
	}
	pdb := pdbs[0]
	if !matches(get(pdb, "spec", "selector", "matchLabels"), podLabels) {
		t.Errorf("PodDisruptionBudget selector %v does not select the pods", get(pdb, "spec", "selector"))
	}
	if get(pdb, "spec", "minAvailable") != 2 && get(pdb, "spec", "maxUnavailable") != 1 {
		t.Errorf("PodDisruptionBudget %v: want minAvailable 2 or maxUnavailable 1", get(pdb, "spec"))
	}

	redisLabels := checkRedis(t, docs)

	// Network policies.
	var proxyNP, redisNP map[string]any
	for _, np := range find(docs, "NetworkPolicy") {
		sel := get(np, "spec", "podSelector", "matchLabels")
		if matches(sel, podLabels) {
			proxyNP = np
		}
		if matches(sel, redisLabels) {
			redisNP = np
		}
		if matches(sel, podLabels) && matches(sel, redisLabels) {
			t.Errorf("NetworkPolicy %v selects both the proxy and Redis", get(np, "metadata", "name"))
		}
	}
	if proxyNP == nil || redisNP == nil {
		t.Fatalf("want a NetworkPolicy for the proxy pods and one for Redis")
	}
	env, _ := envOf(c)
	httpPort, metricsPort := portOf(t, effective(t, env, "PORT")), portOf(t, effective(t, env, "METRICS_ADDR"))
	for _, rule := range list(proxyNP, "spec", "ingress") {
		var ports []int
		for _, p := range list(rule, "ports") {
			n, _ := p["port"].(int)
			ports = append(ports, n)
		}
		from := list(rule, "from")
		if slices.Contains(ports, metricsPort) {
			if len(from) == 0 {
				t.Error("proxy NetworkPolicy: the metrics port is open to all")
			}
			for _, f := range from {
				if get(f, "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name") != "monitoring" {
					t.Errorf("proxy NetworkPolicy: metrics from %v, want the monitoring namespace", f)
				}
			}
		}
		if slices.Contains(ports, httpPort) && slices.Contains(ports, metricsPort) {
			t.Error("proxy NetworkPolicy: one rule for the API and the metrics")
		}
	}
	if !ingressAllows(proxyNP, httpPort) {
		t.Errorf("proxy NetworkPolicy: no ingress on %d", httpPort)
	}
	egressPorts := map[int]bool{}
	toRedis := false
	for _, rule := range list(proxyNP, "spec", "egress") {
		for _, p := range list(rule, "ports") {
			n, _ := p["port"].(int)
			egressPorts[n] = true
			if n == redisPort {
				for _, to := range list(rule, "to") {
					toRedis = toRedis || matches(get(to, "podSelector", "matchLabels"), redisLabels)
				}
			}
		}
	}
	if !egressPorts[53] || !egressPorts[443] || !toRedis {
		t.Errorf("proxy NetworkPolicy egress %v (to Redis: %v): want DNS, 443 and Redis's pods on %d", egressPorts, toRedis, redisPort)
	}
	if !slices.Contains(strs(redisNP, "spec", "policyTypes"), "Egress") || len(list(redisNP, "spec", "egress")) != 0 {
		t.Error("Redis NetworkPolicy: want all egress denied")
	}
	ingress := list(redisNP, "spec", "ingress")
	if len(ingress) != 1 {
		t.Fatalf("Redis NetworkPolicy: %d ingress rules, want 1", len(ingress))
	}
	from := list(ingress[0], "from")
	if len(from) == 0 {
		t.Error("Redis NetworkPolicy: open to all")
	}
	for _, f := range from {
		if !matches(get(f, "podSelector", "matchLabels"), podLabels) || f["namespaceSelector"] != nil {
			t.Errorf("Redis NetworkPolicy admits %v, want the proxy pods only", f)
		}
	}

	checkMonitoring(t, docs)

	// The documented Secret points REDIS_URL at the Redis Service.
	k, err := os.ReadFile(filepath.Join("kubernetes", "overlays", "ha", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "REDIS_URL='redis://" + redisName + ":6379/0'"; !strings.Contains(string(k), want) {
		t.Errorf("overlays/ha/kustomization.yaml: the kubectl create secret example lacks %s", want)
	}
}

func ingressAllows(np map[string]any, port int) bool {
	for _, rule := range list(np, "spec", "ingress") {
		for _, p := range list(rule, "ports") {
			if p["port"] == port && len(list(rule, "from")) == 0 {
				return true
			}
		}
	}
	return false
}

// checkRedis checks the Redis StatefulSet and Service and returns the Redis
// pods' labels.
func checkRedis(t *testing.T, docs []map[string]any) any {
	t.Helper()
	sts := named(t, docs, "StatefulSet", redisName)
	labels := get(sts, "spec", "template", "metadata", "labels")
	if !matches(get(sts, "spec", "selector", "matchLabels"), labels) {
		t.Error("Redis StatefulSet selector does not select its pods")
	}
	c := container(t, sts, "redis")
	if img, _ := c["image"].(string); !strings.HasPrefix(img, "redis:") && !strings.Contains(img, "/redis:") {
		t.Errorf("Redis image %q", img)
	}
	args := append(strs(c, "command"), strs(c, "args")...)
	opt := func(name string) string {
		i := slices.Index(args, name)
		if i < 0 || i+1 >= len(args) {
			return ""
		}
		return args[i+1]
	}
	if opt("--appendonly") != "yes" {
		t.Errorf("Redis arguments %v: want --appendonly yes", args)
	}
	if p := opt("--maxmemory-policy"); p != "noeviction" {
		t.Errorf("Redis --maxmemory-policy %q, want noeviction: every key is state", p)
	}
	_, entries := envOf(c)
	if opt("--requirepass") != "$(REDIS_PASSWORD)" ||
		get(entries["REDIS_PASSWORD"], "valueFrom", "secretKeyRef", "key") != "REDIS_PASSWORD" ||
		get(entries["REDIS_PASSWORD"], "valueFrom", "secretKeyRef", "name") != secretName {
		t.Error("Redis: want --requirepass $(REDIS_PASSWORD) with REDIS_PASSWORD from the Secret")
	}
	dir := opt("--dir")
	claims := map[string]bool{}
	for _, v := range list(sts, "spec", "volumeClaimTemplates") {
		n, _ := get(v, "metadata", "name").(string)
		claims[n] = true
	}
	persistent := false
	for _, m := range list(c, "volumeMounts") {
		persistent = persistent || (m["mountPath"] == dir && claims[m["name"].(string)])
	}
	if dir == "" || !persistent {
		t.Errorf("Redis --dir %q is not on a volumeClaimTemplate", dir)
	}
	pod := get(sts, "spec", "template", "spec")
	if get(pod, "securityContext", "runAsNonRoot") != true || get(c, "securityContext", "readOnlyRootFilesystem") != true {
		t.Error("Redis: want runAsNonRoot and readOnlyRootFilesystem")
	}
	if get(c, "resources", "requests") == nil || get(c, "resources", "limits") == nil {
		t.Error("Redis: resources requests and limits are not both set")
	}
	for _, p := range []string{"readinessProbe", "livenessProbe"} {
		if get(c, p) == nil {
			t.Errorf("Redis: no %s", p)
		}
	}

	svc := named(t, docs, "Service", redisName)
	if get(sts, "spec", "serviceName") != redisName {
		t.Errorf("StatefulSet serviceName %v, want %s", get(sts, "spec", "serviceName"), redisName)
	}
	if !matches(get(svc, "spec", "selector"), labels) {
		t.Error("the Redis Service does not select the Redis pods")
	}
	ports := list(svc, "spec", "ports")
	if len(ports) != 1 || ports[0]["port"] != redisPort {
		t.Errorf("Redis Service ports %v, want %d", ports, redisPort)
	}
	return labels
}
