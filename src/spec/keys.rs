//! The names, label keys and annotation keys every sandbox object carries, and the names the
//! provisioner gives its containers, volumes and environment variables: the one place they are
//! spelled (`k8s::manifests` builds the objects with them; the pod template check refuses them).

/// The provisioner's own labels and annotations are named under this prefix (the watch cache
/// keeps only these annotations).
macro_rules! own_key {
    ($name:literal) => {
        concat!("sandbox-provisioner.dev/", $name)
    };
}
pub const ANNOTATION_PREFIX: &str = own_key!("");

/// DeerFlow's `app` label of every sandbox object.
pub const APP_LABEL_VALUE: &str = "deer-flow-sandbox";
/// Label every sandbox object carries with its id (DeerFlow's selector).
pub const SANDBOX_ID_LABEL: &str = "sandbox-id";
/// Marks objects this service manages; nothing without it is ever touched.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "sandbox-provisioner";
/// The thread the sandbox was created for (annotation: thread ids may exceed label rules).
pub const THREAD_ANNOTATION: &str = own_key!("thread-id");
/// The tenant whose API key created the sandbox, on every object of it (`default` without
/// PROVISIONER_TENANTS).
pub const TENANT_LABEL: &str = own_key!("tenant");
/// The sandbox container's limits as JSON (`{"cpu":"1","memory":"1Gi"}`), which quotas sum.
pub const LIMITS_ANNOTATION: &str = own_key!("limits");
/// The user the sandbox was created for (annotation: user ids may be up to 128 characters).
pub const USER_ANNOTATION: &str = own_key!("user-id");
/// The shell-session capacity set on the sandbox container (the watch cache keeps no pod
/// specs, so reads take it from here).
pub const SHELL_SESSIONS_ANNOTATION: &str = own_key!("max-shell-sessions");
/// The request's own skills path, when it named one (absent: /mnt/skills).
pub const SKILLS_PATH_ANNOTATION: &str = own_key!("skills-container-path");
/// When the provisioner created the sandbox (RFC 3339).
pub const CREATED_ANNOTATION: &str = own_key!("created-at");
/// The sandbox's lifetime in seconds (absent: none).
pub const TTL_ANNOTATION: &str = own_key!("ttl-seconds");
/// The sandbox's idle timeout in seconds (absent: none).
pub const IDLE_ANNOTATION: &str = own_key!("idle-timeout-seconds");
/// The last activity a provisioner wrote down (RFC 3339), at a bounded rate.
pub const ACTIVITY_ANNOTATION: &str = own_key!("last-activity");

/// What a create asked for beyond the annotations above (size, resources, extra mounts,
/// Lark), as JSON, so that a suspended sandbox can be made again exactly.
pub const REQUEST_ANNOTATION: &str = own_key!("request");
/// Label of a suspended sandbox's record (a ConfigMap named like its Pod): the trigger
/// (`api`, `idle`).
pub const SUSPENDED_LABEL: &str = own_key!("suspended");
/// When the sandbox was suspended (RFC 3339), on its record.
pub const SUSPENDED_AT_ANNOTATION: &str = own_key!("suspended-at");
/// When a replica took the suspended sandbox's resume (RFC 3339), on its record: the others
/// wait for that resume instead of making their own.
pub const RESUMING_SINCE_ANNOTATION: &str = own_key!("resuming-since");

/// Label of a warm pool's Pod: the pool (size) it belongs to. A claimed Pod keeps it.
pub const POOL_LABEL: &str = own_key!("pool");
/// Annotation of a claimed pool Pod: the thread's data the node agent binds into it (JSON).
pub const BINDS_ANNOTATION: &str = own_key!("binds");
/// The Pod condition (and readiness gate) the node agent sets once the claimed sandbox's data
/// is bound in, or could not be (False, with the reason).
pub const DATA_BOUND_CONDITION: &str = own_key!("data-bound");
/// The reasons on the data-bound condition: bound, and could not be bound.
pub const DATA_BOUND_REASON: &str = "DataBound";
pub const DATA_NOT_BOUND_REASON: &str = "DataNotBound";
/// The prefix of a warm pool Pod's name; the pool and a random suffix follow.
pub const POOL_POD_PREFIX: &str = "sandbox-pool-";

/// DeerFlow's `app.kubernetes.io/name` label (value `deer-flow`).
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// DeerFlow's `app.kubernetes.io/component` label (value `sandbox`).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// The label keys the provisioner sets on sandbox objects (besides those under
/// [`ANNOTATION_PREFIX`], which are all its own).
pub const OWNED_LABELS: [&str; 5] = [
    "app",
    SANDBOX_ID_LABEL,
    MANAGED_BY_LABEL,
    NAME_LABEL,
    COMPONENT_LABEL,
];

/// Whether a label or annotation key is the provisioner's.
pub fn is_owned_key(key: &str) -> bool {
    key.starts_with(ANNOTATION_PREFIX) || OWNED_LABELS.contains(&key)
}

/// The name of the container that runs the sandbox.
pub const SANDBOX_CONTAINER: &str = "sandbox";
/// The sandbox container's variable for its shell-session capacity (DeerFlow's sandbox images).
pub const SHELL_SESSIONS_ENV: &str = "MAX_SHELL_SESSIONS";
/// Where the sandbox's Lark CLI shim finds the broker sidecar.
pub const LARK_BROKER_URL_ENV: &str = "DEERFLOW_LARK_BROKER_URL";
/// The environment variables the provisioner sets on the sandbox container.
pub const OWNED_ENV: [&str; 2] = [SHELL_SESSIONS_ENV, LARK_BROKER_URL_ENV];

/// The names the provisioner gives the sandbox pod's volumes, and the prefixes of those it
/// numbers or names per helper.
pub const OWNED_VOLUMES: [&str; 5] = [
    "skills",
    "skills-public",
    "skills-custom",
    "skills-legacy",
    "user-data",
];
pub const OWNED_VOLUME_PREFIXES: [&str; 3] = ["extra-", "lark-cli-", "slot-"];

/// Whether a volume name is one the provisioner gives.
pub fn is_owned_volume(name: &str) -> bool {
    OWNED_VOLUMES.contains(&name) || OWNED_VOLUME_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The Lease whose holder is the replica that reaps and sweeps (one per cluster namespace).
pub const LEADER_LEASE: &str = "sandbox-provisioner-leader";
/// The quota lock of the whole deployment (with SANDBOX_MAX_TOTAL); a tenant's lock is this
/// name, `-`, and the tenant.
pub const QUOTA_LOCK: &str = "sandbox-provisioner-quota";
/// Annotation prefix on a quota lock: `<prefix><cluster>` names the pod its last holder
/// created in that cluster.
pub const LAST_CREATED_PREFIX: &str = own_key!("last-created.");
