//! A fresh namespace per test (deleted afterwards, even when the test panics, printing its
//! pods then), and service accounts in it with chosen permissions.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::OwnedRwLockReadGuard;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::{
    api::{DeleteParams, ListParams, PostParams},
    Api, Client,
};

use crate::{
    client, client_for, eventually, kubeconfig_path, random_suffix, second_kubeconfig_path,
};
/// A namespace that exists for one test only.
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
    /// The cluster it is in.
    kubeconfig: PathBuf,
    /// The test's shared pass (none while it runs alone).
    _pass: Option<Arc<OwnedRwLockReadGuard<()>>>,
}

impl TestNamespace {
    /// Creates `t-{prefix}-{random}` and waits until its default service account exists (pods
    /// are refused before that).
    pub async fn new(prefix: &str) -> TestNamespace {
        let name = format!("t-{}-{}", &prefix[..prefix.len().min(30)], random_suffix());
        TestNamespace::create(kubeconfig_path(), name).await
    }

    /// The namespace of the same name in the second cluster.
    pub async fn in_second_cluster(&self) -> TestNamespace {
        TestNamespace::create(second_kubeconfig_path(), self.name.clone()).await
    }

    async fn create(kubeconfig: PathBuf, name: String) -> TestNamespace {
        let pass = crate::gate::shared().await;
        let client = client_for(&kubeconfig).await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": {"sandbox-provisioner.dev/test": "true"}}})).unwrap();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating the test namespace");
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        eventually(
            Duration::from_secs(30),
            "the default service account and its token",
            || async {
                let sa = accounts.get_opt("default").await.ok().flatten()?;
                sa.secrets.filter(|s| !s.is_empty()).map(|_| ())
            },
        )
        .await;
        TestNamespace {
            client,
            name,
            kubeconfig,
            _pass: pass,
        }
    }

    /// A namespace name for a test that lets the code under test create it.
    pub async fn uncreated(prefix: &str) -> TestNamespace {
        TestNamespace {
            _pass: crate::gate::shared().await,
            client: client().await,
            name: format!("t-{}-{}", &prefix[..prefix.len().min(30)], random_suffix()),
            kubeconfig: kubeconfig_path(),
        }
    }

    /// The environment of a provisioner binary serving this namespace of the first cluster,
    /// with `more` after it.
    pub fn binary_env(
        &self,
        more: impl IntoIterator<Item = (&'static str, String)>,
    ) -> Vec<(&'static str, String)> {
        let mut env = vec![
            (
                "KUBECONFIG_PATH",
                crate::kubeconfig_path().display().to_string(),
            ),
            ("K8S_NAMESPACE", self.name.clone()),
        ];
        env.extend(more);
        env
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace and waits until it is gone, with everything in it.
    pub async fn delete_and_wait(&self, what: &str) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap();
        eventually(Duration::from_secs(60), what, || async {
            namespaces
                .get_opt(&self.name)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
    }

    /// Pods and services left in the namespace, as `kind/name` strings.
    pub async fn leftovers(&self) -> Vec<String> {
        let lp = ListParams::default();
        let pods = self.pods().list(&lp).await.unwrap().items;
        let services = self.services().list(&lp).await.unwrap().items;
        pods.iter()
            .map(|p| format!("pod/{}", p.metadata.name.as_deref().unwrap_or("")))
            .chain(
                services
                    .iter()
                    .map(|s| format!("service/{}", s.metadata.name.as_deref().unwrap_or(""))),
            )
            .collect()
    }
}

impl Drop for TestNamespace {
    /// Deletes the namespace from a thread of its own, so that it also happens after a panic
    /// and outside the test's (possibly finished) runtime.
    fn drop(&mut self) {
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        let panicking = std::thread::panicking();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = client_for(&kubeconfig).await;
                if panicking {
                    dump(&client, &name).await;
                }
                let namespaces: Api<Namespace> = Api::all(client.clone());
                let _ = namespaces.delete(&name, &DeleteParams::default()).await;
                // Cluster-scoped objects a test made for this namespace carry its name.
                use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
                let dp = DeleteParams::default();
                for suffix in ["-reader", "-deploy"] {
                    let object = format!("{name}{suffix}");
                    let _ = Api::<ClusterRole>::all(client.clone())
                        .delete(&object, &dp)
                        .await;
                    let _ = Api::<ClusterRoleBinding>::all(client.clone())
                        .delete(&object, &dp)
                        .await;
                }
                use k8s_openapi::api::{node::v1::RuntimeClass, scheduling::v1::PriorityClass};
                let pc = format!("{name}-pc");
                let _ = Api::<PriorityClass>::all(client.clone())
                    .delete(&pc, &dp)
                    .await;
                let rc = format!("{name}-rc");
                let _ = Api::<RuntimeClass>::all(client.clone())
                    .delete(&rc, &dp)
                    .await;
            });
        })
        .join();
    }
}

/// Prints the pods of a failed test's namespace, to see what the cluster thought.
async fn dump(client: &Client, namespace: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    if let Ok(list) = pods.list(&ListParams::default()).await {
        for p in list.items {
            eprintln!(
                "[{namespace}] pod {} status: {}",
                p.metadata.name.unwrap_or_default(),
                serde_json::to_string(&p.status).unwrap_or_default()
            );
        }
    }
}

impl TestNamespace {
    /// A kubeconfig for a ServiceAccount of this namespace bound to a Role with `rules`
    /// (Role rule objects as JSON), e.g. to test with a credential that is not cluster-admin.
    pub async fn service_account_kubeconfig(
        &self,
        name: &str,
        rules: serde_json::Value,
    ) -> PathBuf {
        use k8s_openapi::api::{
            core::v1::ServiceAccount,
            rbac::v1::{Role, RoleBinding},
        };
        let pp = PostParams::default();
        let sa: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        Api::<ServiceAccount>::namespaced(self.client.clone(), &self.name)
            .create(&pp, &sa)
            .await
            .unwrap();
        let role: Role =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "rules": rules}))
                .unwrap();
        Api::<Role>::namespaced(self.client.clone(), &self.name)
            .create(&pp, &role)
            .await
            .unwrap();
        let binding: RoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": self.name}],
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(self.client.clone(), &self.name)
            .create(&pp, &binding)
            .await
            .unwrap();
        self.kubeconfig_for_service_account(name).await
    }

    /// Applies shipped manifests of `deploy/kubernetes` to this namespace: the ServiceAccount of
    /// `account_dir`, and the Role and RoleBinding of each of `role_dirs` ("" is the base).
    /// Returns a kubeconfig with exactly the token of the account, `account`.
    pub async fn apply_shipped_rbac(
        &self,
        account_dir: &str,
        role_dirs: &[&str],
        account: &str,
    ) -> PathBuf {
        use k8s_openapi::api::{
            core::v1::ServiceAccount,
            rbac::v1::{Role, RoleBinding},
        };
        let read = |dir: &str, file: &str| {
            let path = crate::real_node::repo_root()
                .join("deploy/kubernetes")
                .join(dir)
                .join(file);
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let pp = PostParams::default();
        let sa: ServiceAccount =
            serde_saphyr::from_str(&read(account_dir, "serviceaccount.yaml")).unwrap();
        Api::<ServiceAccount>::namespaced(self.client.clone(), &self.name)
            .create(&pp, &sa)
            .await
            .unwrap();
        for dir in role_dirs {
            let role: Role = serde_saphyr::from_str(&read(dir, "role.yaml")).unwrap();
            Api::<Role>::namespaced(self.client.clone(), &self.name)
                .create(&pp, &role)
                .await
                .unwrap();
            let mut binding: RoleBinding =
                serde_saphyr::from_str(&read(dir, "rolebinding.yaml")).unwrap();
            for subject in binding.subjects.iter_mut().flatten() {
                subject.namespace = Some(self.name.clone());
            }
            Api::<RoleBinding>::namespaced(self.client.clone(), &self.name)
                .create(&pp, &binding)
                .await
                .unwrap();
        }
        self.kubeconfig_for_service_account(account).await
    }

    /// A kubeconfig that authenticates as an existing ServiceAccount of this namespace.
    pub async fn kubeconfig_for_service_account(&self, name: &str) -> PathBuf {
        use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.name);
        let secret_name = eventually(
            Duration::from_secs(30),
            "the service account token",
            || async {
                accounts
                    .get(name)
                    .await
                    .ok()?
                    .secrets?
                    .first()?
                    .name
                    .clone()
            },
        )
        .await;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.name);
        let token = eventually(Duration::from_secs(30), "the token secret", || async {
            let data = secrets.get(&secret_name).await.ok()?.data?;
            String::from_utf8(data.get("token")?.0.clone()).ok()
        })
        .await;
        let original = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let mut rewritten = String::new();
        for line in original.lines() {
            match line.trim_start().strip_prefix("token: ") {
                Some(_) => rewritten.push_str(&format!("    token: {token}\n")),
                None => {
                    rewritten.push_str(line);
                    rewritten.push('\n');
                }
            }
        }
        // The same namespace name may exist in both clusters: the file names which.
        let path = std::env::temp_dir().join(format!(
            "kubeconfig-{}-{name}-{}",
            self.name,
            random_suffix()
        ));
        std::fs::write(&path, rewritten).unwrap();
        path
    }
}

impl TestNamespace {
    /// Lets a service account of this namespace read (only) this namespace, as the deployment's
    /// ClusterRole does for its own.
    pub async fn grant_namespace_read(&self, service_account: &str) {
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
        let name = format!("{}-reader", self.name);
        let role: ClusterRole = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "resourceNames": [self.name], "verbs": ["get"]}],
        }))
        .unwrap();
        Api::<ClusterRole>::all(self.client.clone())
            .create(&PostParams::default(), &role)
            .await
            .unwrap();
        let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": self.name}],
        }))
        .unwrap();
        Api::<ClusterRoleBinding>::all(self.client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
    }
}

/// The Role rules the provisioner needs in its namespace with the leader election on and no
/// NetworkPolicies or claims (from the permissions table).
pub fn provisioner_rules() -> serde_json::Value {
    use sandbox_provisioner::permissions::{role_rules, Features};
    role_rules(Features {
        leader_election: true,
        ..Features::default()
    })
}
