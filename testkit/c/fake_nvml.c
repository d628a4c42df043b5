/*
 * A fake libnvidia-ml.so for Empreinte's tests, loaded through the real nvml-wrapper.
 *
 * It exports the NVML entry points nvml-wrapper 0.13 calls for what Empreinte uses:
 * nvmlInit_v2, nvmlInit, nvmlShutdown, nvmlSystemGetDriverVersion, nvmlErrorString,
 * nvmlDeviceGetCount_v2, nvmlDeviceGetHandleByIndex_v2, nvmlDeviceGetIndex,
 * nvmlDeviceGetName, nvmlDeviceGetUUID, nvmlDeviceGetTotalEnergyConsumption,
 * nvmlDeviceGetPowerUsage, nvmlDeviceGetPowerManagementLimit,
 * nvmlDeviceGetEnforcedPowerLimit, nvmlDeviceGetComputeRunningProcesses_v3,
 * nvmlDeviceGetProcessUtilization, nvmlDeviceGetMigMode, nvmlDeviceGetPersistenceMode.
 *
 * SCENARIO. The library reads its behaviour from the file `<its own path>.scenario`
 * (found with dladdr, never with an environment variable, so that tests running in
 * parallel threads each drive their own copy of the library). The file is re-read on
 * every call that needs data: a test advances the trace by rewriting it (write a temp
 * file, then rename it over the scenario). Format, one item per line, `#` starts a
 * comment, fields are `key=value`, a value may be double-quoted to hold spaces:
 *
 *   init_error=N        nvmlInit_v2 returns N (e.g. 9 DRIVER_NOT_LOADED)
 *   driver="550.54.15"  the driver version string
 *   generation=N        the driver's load generation (default 0). nvmlInit_v2 records
 *                       it; once the scenario's generation differs (a driver reload),
 *                       every call on handles of the old initialisation returns
 *                       UNINITIALIZED until the caller shuts down and initialises again.
 *   gpu INDEX uuid=S name=S energy_mj=N|unsupported power_mw=N|unsupported
 *       limit_mw=N|unsupported [fail=N] [utilization=unsupported]
 *       [mig=on|off] [persistence=on|off]
 *                       a GPU (indices 0..count-1, in any order). fail=N makes every
 *                       data call on this GPU (energy, power, limits, processes,
 *                       utilisation) return N, e.g. 15 GPU_IS_LOST. mig: the MIG mode
 *                       (NOT_SUPPORTED when absent); persistence: the persistence mode
 *                       (NOT_SUPPORTED when absent).
 *   process GPU pid=N used_mem=N|unavailable [gi=N] [ci=N]
 *                       a running compute process on GPU (used_mem in bytes), in MIG
 *                       GPU instance gi and compute instance ci (none when absent)
 *   sample GPU pid=N ts_us=N sm=N mem=N enc=N dec=N
 *                       a process utilisation sample on GPU
 *
 * A missing or unparseable scenario file makes nvmlInit_v2 return
 * NVML_ERROR_UNINITIALIZED (1), and any later data call return the same.
 *
 * Return codes follow NVML: 7 INSUFFICIENT_SIZE when the caller's buffer is null or too
 * small (the count is written), 6 NOT_FOUND when no utilisation sample is newer than
 * lastSeenTimeStamp, 3 NOT_SUPPORTED for an unsupported reading, 2 INVALID_ARGUMENT for
 * a bad handle or pointer.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;

enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_UNKNOWN = 999,
};

#define MAX_GPUS 16
#define MAX_PROCS 64
#define MAX_SAMPLES 256
#define STR_LEN 96
#define UNSUPPORTED (-1LL)
#define NOT_AVAILABLE 0xFFFFFFFFFFFFFFFFULL
#define NO_ID 0xFFFFFFFFu

/* Layouts of nvml-wrapper-sys 0.10 (nvmlProcessInfo_v2_st, nvmlProcessUtilizationSample_st). */
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil;
    unsigned int memUtil;
    unsigned int encUtil;
    unsigned int decUtil;
} nvmlProcessUtilizationSample_t;

struct gpu {
    int present;
    char uuid[STR_LEN];
    char name[STR_LEN];
    long long energy_mj; /* UNSUPPORTED or value */
    long long power_mw;
    long long limit_mw;
    int fail;
    int utilization_unsupported;
    int mig;         /* -1 unsupported, 0 off, 1 on */
    int persistence; /* -1 unsupported, 0 off, 1 on */
};

struct proc {
    unsigned int gpu;
    unsigned int pid;
    unsigned long long used_mem;
    unsigned int gi;
    unsigned int ci;
};

struct sample {
    unsigned int gpu;
    nvmlProcessUtilizationSample_t s;
};

struct scenario {
    int init_error;
    unsigned long long generation;
    char driver[STR_LEN];
    unsigned int gpu_count;
    struct gpu gpus[MAX_GPUS];
    unsigned int proc_count;
    struct proc procs[MAX_PROCS];
    unsigned int sample_count;
    struct sample samples[MAX_SAMPLES];
};

/* Handles are pointers into this array; the index is the offset. */
static char handles[MAX_GPUS];
static int init_count;
static unsigned long long init_generation;

static int scenario_path(char *out, size_t len) {
    Dl_info info;
    if (!dladdr((void *)&scenario_path, &info) || !info.dli_fname) return -1;
    int n = snprintf(out, len, "%s.scenario", info.dli_fname);
    return (n < 0 || (size_t)n >= len) ? -1 : 0;
}

/* Splits the next token off *p (whitespace separated, quotes group). Returns NULL at end. */
static char *next_token(char **p) {
    char *s = *p;
    while (*s == ' ' || *s == '\t') s++;
    if (!*s) return NULL;
    char *tok = s, *w = s;
    int quoted = 0;
    while (*s && (quoted || (*s != ' ' && *s != '\t'))) {
        if (*s == '"') {
            quoted = !quoted;
            s++;
            continue;
        }
        *w++ = *s++;
    }
    if (*s) s++;
    *w = '\0';
    *p = s;
    return tok;
}

static int parse_u64(const char *v, unsigned long long *out) {
    char *end;
    if (!*v) return -1;
    *out = strtoull(v, &end, 10);
    return *end ? -1 : 0;
}

static int parse_opt(const char *v, const char *none_word, long long *out) {
    unsigned long long x;
    if (strcmp(v, none_word) == 0) {
        *out = UNSUPPORTED;
        return 0;
    }
    if (parse_u64(v, &x)) return -1;
    *out = (long long)x;
    return 0;
}

static void copy_str(char *dst, const char *src) {
    snprintf(dst, STR_LEN, "%s", src);
}

/* Parses one line; returns 0 on success, -1 on a malformed line. */
static int parse_line(struct scenario *sc, char *line) {
    char *p = line, *kind = next_token(&p), *tok;
    unsigned long long n;
    if (!kind || kind[0] == '#') return 0;
    if (strncmp(kind, "init_error=", 11) == 0) {
        if (parse_u64(kind + 11, &n)) return -1;
        sc->init_error = (int)n;
        return 0;
    }
    if (strncmp(kind, "generation=", 11) == 0) {
        return parse_u64(kind + 11, &sc->generation);
    }
    if (strncmp(kind, "driver=", 7) == 0) {
        copy_str(sc->driver, kind + 7);
        return 0;
    }
    int is_gpu = strcmp(kind, "gpu") == 0, is_proc = strcmp(kind, "process") == 0,
        is_sample = strcmp(kind, "sample") == 0;
    if (!is_gpu && !is_proc && !is_sample) return -1;
    if (!(tok = next_token(&p)) || parse_u64(tok, &n) || n >= MAX_GPUS) return -1;
    unsigned int gpu = (unsigned int)n;

    struct gpu *g = &sc->gpus[gpu];
    struct proc *pr = NULL;
    struct sample *sa = NULL;
    if (is_gpu) {
        memset(g, 0, sizeof *g);
        g->present = 1;
        copy_str(g->uuid, "GPU-00000000-0000-0000-0000-000000000000");
        copy_str(g->name, "NVIDIA Fake GPU");
        g->energy_mj = g->power_mw = g->limit_mw = UNSUPPORTED;
        g->mig = g->persistence = -1;
        if (gpu + 1 > sc->gpu_count) sc->gpu_count = gpu + 1;
    } else if (is_proc) {
        if (sc->proc_count >= MAX_PROCS) return -1;
        pr = &sc->procs[sc->proc_count++];
        memset(pr, 0, sizeof *pr);
        pr->gpu = gpu;
        pr->gi = pr->ci = NO_ID;
    } else {
        if (sc->sample_count >= MAX_SAMPLES) return -1;
        sa = &sc->samples[sc->sample_count++];
        memset(sa, 0, sizeof *sa);
        sa->gpu = gpu;
    }

    while ((tok = next_token(&p))) {
        char *eq = strchr(tok, '=');
        if (!eq) return -1;
        *eq = '\0';
        const char *k = tok, *v = eq + 1;
        int bad = 0;
        if (is_gpu) {
            if (!strcmp(k, "uuid")) copy_str(g->uuid, v);
            else if (!strcmp(k, "name")) copy_str(g->name, v);
            else if (!strcmp(k, "energy_mj")) bad = parse_opt(v, "unsupported", &g->energy_mj);
            else if (!strcmp(k, "power_mw")) bad = parse_opt(v, "unsupported", &g->power_mw);
            else if (!strcmp(k, "limit_mw")) bad = parse_opt(v, "unsupported", &g->limit_mw);
            else if (!strcmp(k, "fail")) { bad = parse_u64(v, &n); g->fail = (int)n; }
            else if (!strcmp(k, "utilization")) {
                bad = strcmp(v, "unsupported") != 0;
                g->utilization_unsupported = 1;
            } else if (!strcmp(k, "mig") || !strcmp(k, "persistence")) {
                int *field = !strcmp(k, "mig") ? &g->mig : &g->persistence;
                if (!strcmp(v, "on")) *field = 1;
                else if (!strcmp(v, "off")) *field = 0;
                else bad = 1;
            } else bad = 1;
        } else if (is_proc) {
            if (!strcmp(k, "pid")) { bad = parse_u64(v, &n); pr->pid = (unsigned int)n; }
            else if (!strcmp(k, "used_mem")) {
                if (!strcmp(v, "unavailable")) pr->used_mem = NOT_AVAILABLE;
                else bad = parse_u64(v, &pr->used_mem);
            } else if (!strcmp(k, "gi")) { bad = parse_u64(v, &n); pr->gi = (unsigned int)n; }
            else if (!strcmp(k, "ci")) { bad = parse_u64(v, &n); pr->ci = (unsigned int)n; }
            else bad = 1;
        } else {
            nvmlProcessUtilizationSample_t *s = &sa->s;
            if (!strcmp(k, "pid")) { bad = parse_u64(v, &n); s->pid = (unsigned int)n; }
            else if (!strcmp(k, "ts_us")) bad = parse_u64(v, &s->timeStamp);
            else if (!strcmp(k, "sm")) { bad = parse_u64(v, &n); s->smUtil = (unsigned int)n; }
            else if (!strcmp(k, "mem")) { bad = parse_u64(v, &n); s->memUtil = (unsigned int)n; }
            else if (!strcmp(k, "enc")) { bad = parse_u64(v, &n); s->encUtil = (unsigned int)n; }
            else if (!strcmp(k, "dec")) { bad = parse_u64(v, &n); s->decUtil = (unsigned int)n; }
            else bad = 1;
        }
        if (bad) return -1;
    }
    return 0;
}

/* Reads the scenario; returns 0 on success, -1 if it is missing or malformed. */
static int load(struct scenario *sc) {
    char path[4096], line[1024];
    memset(sc, 0, sizeof *sc);
    copy_str(sc->driver, "550.54.15");
    if (scenario_path(path, sizeof path)) return -1;
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int rc = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (parse_line(sc, line)) {
            rc = -1;
            break;
        }
    }
    fclose(f);
    for (unsigned int i = 0; rc == 0 && i < sc->gpu_count; i++)
        if (!sc->gpus[i].present) rc = -1; /* indices must be contiguous */
    return rc;
}

/* Loads the scenario and resolves a handle to its GPU; returns an NVML code. */
static nvmlReturn_t device(void *handle, struct scenario *sc, unsigned int *index, struct gpu **g) {
    if (init_count <= 0 || load(sc)) return NVML_ERROR_UNINITIALIZED;
    if (sc->generation != init_generation) return NVML_ERROR_UNINITIALIZED;
    char *h = (char *)handle;
    if (h < handles || h >= handles + MAX_GPUS) return NVML_ERROR_INVALID_ARGUMENT;
    *index = (unsigned int)(h - handles);
    if (*index >= sc->gpu_count) return NVML_ERROR_INVALID_ARGUMENT;
    *g = &sc->gpus[*index];
    return NVML_SUCCESS;
}

/* As device(), then the GPU's forced failure if any. */
static nvmlReturn_t data_device(void *handle, struct scenario *sc, unsigned int *index, struct gpu **g) {
    nvmlReturn_t rc = device(handle, sc, index, g);
    if (rc != NVML_SUCCESS) return rc;
    return (*g)->fail ? (*g)->fail : NVML_SUCCESS;
}

static nvmlReturn_t put_string(char *dst, unsigned int len, const char *src) {
    if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) {
    struct scenario sc;
    if (load(&sc)) return NVML_ERROR_UNINITIALIZED;
    if (sc.init_error) return sc.init_error;
    init_count++;
    init_generation = sc.generation;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit(void) { return nvmlInit_v2(); }

nvmlReturn_t nvmlShutdown(void) {
    if (init_count <= 0) return NVML_ERROR_UNINITIALIZED;
    init_count--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    default: return "Unknown Error (fake NVML)";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    struct scenario sc;
    if (init_count <= 0 || load(&sc)) return NVML_ERROR_UNINITIALIZED;
    return put_string(version, length, sc.driver);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    struct scenario sc;
    if (init_count <= 0 || load(&sc)) return NVML_ERROR_UNINITIALIZED;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = sc.gpu_count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **device_out) {
    struct scenario sc;
    if (init_count <= 0 || load(&sc)) return NVML_ERROR_UNINITIALIZED;
    if (sc.generation != init_generation) return NVML_ERROR_UNINITIALIZED;
    if (!device_out || index >= sc.gpu_count) return NVML_ERROR_INVALID_ARGUMENT;
    *device_out = &handles[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetIndex(void *handle, unsigned int *index) {
    struct scenario sc;
    struct gpu *g;
    unsigned int i;
    nvmlReturn_t rc = device(handle, &sc, &i, &g);
    if (rc) return rc;
    if (!index) return NVML_ERROR_INVALID_ARGUMENT;
    *index = i;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(void *handle, char *name, unsigned int length) {
    struct scenario sc;
    struct gpu *g;
    unsigned int i;
    nvmlReturn_t rc = device(handle, &sc, &i, &g);
    return rc ? rc : put_string(name, length, g->name);
}

nvmlReturn_t nvmlDeviceGetUUID(void *handle, char *uuid, unsigned int length) {
    struct scenario sc;
    struct gpu *g;
    unsigned int i;
    nvmlReturn_t rc = device(handle, &sc, &i, &g);
    return rc ? rc : put_string(uuid, length, g->uuid);
}

static nvmlReturn_t read_value(void *handle, size_t offset, long long *value) {
    struct scenario sc;
    struct gpu *g;
    unsigned int i;
    nvmlReturn_t rc = data_device(handle, &sc, &i, &g);
    if (rc) return rc;
    long long v = *(long long *)((char *)g + offset);
    if (v == UNSUPPORTED) return NVML_ERROR_NOT_SUPPORTED;
    *value = v;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(void *handle, unsigned long long *energy) {
    long long v;
    if (!energy) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t rc = read_value(handle, offsetof(struct gpu, energy_mj), &v);
    if (!rc) *energy = (unsigned long long)v;
    return rc;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(void *handle, unsigned int *power) {
    long long v;
    if (!power) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t rc = read_value(handle, offsetof(struct gpu, power_mw), &v);
    if (!rc) *power = (unsigned int)v;
    return rc;
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimit(void *handle, unsigned int *limit) {
    long long v;
    if (!limit) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t rc = read_value(handle, offsetof(struct gpu, limit_mw), &v);
    if (!rc) *limit = (unsigned int)v;
    return rc;
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(void *handle, unsigned int *limit) {
    return nvmlDeviceGetPowerManagementLimit(handle, limit);
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(void *handle, unsigned int *count,
                                                     nvmlProcessInfo_t *infos) {
    struct scenario sc;
    struct gpu *g;
    unsigned int gi;
    nvmlReturn_t rc = data_device(handle, &sc, &gi, &g);
    if (rc) return rc;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int n = 0;
    for (unsigned int i = 0; i < sc.proc_count; i++) n += sc.procs[i].gpu == gi;
    if (n == 0) {
        *count = 0;
        return NVML_SUCCESS;
    }
    if (!infos || *count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    unsigned int k = 0;
    for (unsigned int i = 0; i < sc.proc_count; i++) {
        if (sc.procs[i].gpu != gi) continue;
        infos[k].pid = sc.procs[i].pid;
        infos[k].usedGpuMemory = sc.procs[i].used_mem;
        infos[k].gpuInstanceId = sc.procs[i].gi;
        infos[k].computeInstanceId = sc.procs[i].ci;
        k++;
    }
    *count = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetProcessUtilization(void *handle, nvmlProcessUtilizationSample_t *samples,
                                             unsigned int *count, unsigned long long last_seen) {
    struct scenario sc;
    struct gpu *g;
    unsigned int gi;
    nvmlReturn_t rc = data_device(handle, &sc, &gi, &g);
    if (rc) return rc;
    if (g->utilization_unsupported || g->mig == 1) return NVML_ERROR_NOT_SUPPORTED;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int n = 0;
    for (unsigned int i = 0; i < sc.sample_count; i++)
        n += sc.samples[i].gpu == gi && sc.samples[i].s.timeStamp > last_seen;
    if (n == 0) {
        *count = 0;
        return NVML_ERROR_NOT_FOUND;
    }
    if (!samples || *count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    unsigned int k = 0;
    for (unsigned int i = 0; i < sc.sample_count; i++)
        if (sc.samples[i].gpu == gi && sc.samples[i].s.timeStamp > last_seen)
            samples[k++] = sc.samples[i].s;
    *count = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(void *handle, unsigned int *current, unsigned int *pending) {
    struct scenario sc;
    struct gpu *g;
    unsigned int i;
    nvmlReturn_t rc = data_device(handle, &sc, &i, &g);
    if (rc) return rc;
    if (g->mig < 0) return NVML_ERROR_NOT_SUPPORTED;
    if (!current || !pending) return NVML_ERROR_INVALID_ARGUMENT;
    *current = *pending = (unsigned int)g->mig;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPersistenceMode(void *handle, int *mode) {
    struct scenario sc;
    struct gpu *g;
    unsigned int i;
    nvmlReturn_t rc = data_device(handle, &sc, &i, &g);
    if (rc) return rc;
    if (g->persistence < 0) return NVML_ERROR_NOT_SUPPORTED;
    if (!mode) return NVML_ERROR_INVALID_ARGUMENT;
    *mode = g->persistence;
    return NVML_SUCCESS;
}
