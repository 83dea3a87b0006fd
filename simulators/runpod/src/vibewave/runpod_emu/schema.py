"""The slice of RunPod's GraphQL schema the emulator serves, as SDL.

A real schema (rather than string matching) is what makes unknown fields and inputs fail validation with
HTTP 400 exactly like RunPod's graphql-js server, and lets both the SDK's inline literals and a client's
`$input: PodFindAndDeployOnDemandInput!` variables work. Type and field names follow reference §2.
Top-level mutation arguments are nullable so a client may declare its variable either way.
"""

from __future__ import annotations

from functools import cache

from graphql import GraphQLSchema, build_schema

SDL = """
scalar Void

enum CloudTypeEnum { ALL SECURE COMMUNITY }
enum ComputeType { CPU GPU }
enum PodStatus { CREATED RUNNING RESTARTING EXITED PAUSED DEAD TERMINATED }
enum PodType { INTERRUPTABLE RESERVED BID BACKGROUND }

type Query {
  myself: User
  pod(input: PodFilter!): Pod
  gpuTypes(input: GpuTypeFilter): [GpuType]
  dataCenters: [DataCenter]
  podTemplate(id: String!): PodTemplate
}

type Mutation {
  podFindAndDeployOnDemand(input: PodFindAndDeployOnDemandInput): Pod
  deployCpuPod(input: deployCpuPodInput): Pod
  podStop(input: PodStopInput): Pod
  podResume(input: PodResumeInput): Pod
  podTerminate(input: PodTerminateInput): Void
  updateUserSettings(input: UpdateUserSettingsInput): User
  saveTemplate(input: SaveTemplateInput): PodTemplate
  deleteTemplate(templateName: String): Void
  createNetworkVolume(input: CreateNetworkVolumeInput): NetworkVolume
  deleteNetworkVolume(input: DeleteNetworkVolumeInput): Void
}

input PodFilter { podId: String! }

input GpuTypeFilter { id: String ids: [String] }

input GpuLowestPriceInput {
  gpuCount: Int
  secureCloud: Boolean
  dataCenterId: String
  countryCode: String
  minMemoryInGb: Int
  minVcpuCount: Int
  minDisk: Int
  totalDisk: Int
  minDownload: Int
  minUpload: Int
  supportPublicIp: Boolean
  includeAiApi: Boolean
  cudaVersion: String
  allowedCudaVersions: [String]
  compliance: [String]
}

input EnvironmentVariableInput { key: String! value: String! }

input SavingsPlanInput { planLength: String upfrontCost: Float }

input PodFindAndDeployOnDemandInput {
  cloudType: CloudTypeEnum
  computeType: ComputeType
  gpuTypeId: String
  gpuTypeIdList: [String]
  gpuCount: Int
  name: String
  imageName: String
  templateId: String
  containerDiskInGb: Int
  volumeInGb: Int
  volumeMountPath: String
  volumeKey: String
  dockerArgs: String
  ports: String
  port: Int
  env: [EnvironmentVariableInput]
  startSsh: Boolean
  startJupyter: Boolean
  supportPublicIp: Boolean
  minVcpuCount: Int
  minMemoryInGb: Int
  minDisk: Int
  minDownload: Int
  minUpload: Int
  countryCode: String
  dataCenterId: String
  networkVolumeId: String
  cudaVersion: String
  minCudaVersion: String
  allowedCudaVersions: [String]
  containerRegistryAuthId: String
  stopAfter: String
  terminateAfter: String
  deployCost: Float
  aiApiId: String
  savingsPlan: SavingsPlanInput
  instanceIds: [String]
  compliance: [String]
}

input deployCpuPodInput {
  cloudType: CloudTypeEnum
  instanceId: String
  name: String
  imageName: String
  templateId: String
  containerDiskInGb: Int
  volumeInGb: Int
  volumeMountPath: String
  dockerArgs: String
  ports: String
  env: [EnvironmentVariableInput]
  startSsh: Boolean
  startJupyter: Boolean
  supportPublicIp: Boolean
  countryCode: String
  dataCenterId: String
  networkVolumeId: String
  minDownload: Int
  minUpload: Int
  containerRegistryAuthId: String
  deployCost: Float
}

input PodStopInput { podId: String! incrementVersion: Boolean }

input PodResumeInput { podId: String! gpuCount: Int syncMachine: Boolean computeType: ComputeType }

input PodTerminateInput { podId: String! }

input UpdateUserSettingsInput {
  pubKey: String
  notifyPodsStale: Boolean
  notifyPodsGeneral: Boolean
  notifyLowBalance: Boolean
  creditAlertThreshold: Float
}

input SaveTemplateInput {
  id: String
  name: String!
  imageName: String!
  dockerArgs: String
  containerDiskInGb: Int
  volumeInGb: Int
  volumeMountPath: String
  ports: String
  env: [EnvironmentVariableInput]
  isServerless: Boolean
  containerRegistryAuthId: String
  startSsh: Boolean
  startJupyter: Boolean
  isPublic: Boolean
  readme: String
  category: String
}

input CreateNetworkVolumeInput { name: String! size: Int! dataCenterId: String! }

input DeleteNetworkVolumeInput { id: String! }

type User {
  id: String
  email: String
  clientBalance: Float
  currentSpendPerHr: Float
  spendLimit: Int
  underBalance: Boolean
  minBalance: Float
  clientLifetimeSpend: Float
  creditAlertThreshold: Float
  notifyPodsStale: Boolean
  notifyPodsGeneral: Boolean
  notifyLowBalance: Boolean
  pubKey: String
  pods: [Pod]
  networkVolumes: [NetworkVolume]
  podTemplates: [PodTemplate]
  spendDetails: SpendDetails
}

type SpendDetails {
  localStoragePerHour: Float
  networkStoragePerHour: Float
  gpuComputePerHour: Float
}

type Pod {
  id: String
  name: String
  desiredStatus: PodStatus
  imageName: String
  gpuCount: Int
  vcpuCount: Int
  memoryInGb: Int
  containerDiskInGb: Int
  volumeInGb: Int
  volumeMountPath: String
  costPerHr: Float
  adjustedCostPerHr: Float
  machineId: String
  env: [String]
  ports: String
  port: Int
  dockerArgs: String
  dockerId: String
  lastStatusChange: String
  uptimeSeconds: Int
  podType: PodType
  templateId: String
  networkVolumeId: String
  locked: Boolean
  lastStartedAt: String
  createdAt: String
  cpuFlavorId: String
  volumeEncrypted: Boolean
  containerRegistryAuthId: String
  runtime: PodRuntime
  machine: PodMachineInfo
  networkVolume: NetworkVolume
}

type PodRuntime {
  uptimeInSeconds: Int
  ports: [PodRuntimePorts]
  gpus: [PodRuntimeGpus]
  container: PodRuntimeContainer
}

type PodRuntimePorts { ip: String isIpPublic: Boolean privatePort: Int publicPort: Int type: String }

type PodRuntimeGpus { id: String gpuUtilPercent: Int memoryUtilPercent: Int }

type PodRuntimeContainer { cpuPercent: Int memoryPercent: Int }

type PodMachineInfo {
  podHostId: String
  gpuDisplayName: String
  gpuTypeId: String
  gpuType: GpuType
  location: String
  dataCenterId: String
  secureCloud: Boolean
  supportPublicIp: Boolean
  costPerHr: Float
  currentPricePerGpu: Float
  maxDownloadSpeedMbps: Int
  maxUploadSpeedMbps: Int
}

type GpuType {
  id: String
  displayName: String
  manufacturer: String
  memoryInGb: Int
  cudaCores: Int
  maxGpuCount: Int
  maxGpuCountSecureCloud: Int
  maxGpuCountCommunityCloud: Int
  minPodGpuCount: Int
  secureCloud: Boolean
  communityCloud: Boolean
  securePrice: Float
  communityPrice: Float
  secureSpotPrice: Float
  communitySpotPrice: Float
  oneWeekPrice: Float
  oneMonthPrice: Float
  threeMonthPrice: Float
  sixMonthPrice: Float
  lowestPrice(input: GpuLowestPriceInput): LowestPrice
}

type LowestPrice {
  gpuName: String
  gpuTypeId: String
  minimumBidPrice: Float
  uninterruptablePrice: Float
  minMemory: Int
  minVcpu: Int
  stockStatus: String
  availableGpuCounts: [Int]
  rentalPercentage: Float
  rentedCount: Int
  totalCount: Int
  countryCode: String
  supportPublicIp: Boolean
}

type NetworkVolume { id: String name: String size: Int dataCenterId: String }

type EnvironmentVariable { key: String value: String }

type PodTemplate {
  id: String
  name: String
  imageName: String
  dockerArgs: String
  containerDiskInGb: Int
  volumeInGb: Int
  volumeMountPath: String
  ports: String
  env: [EnvironmentVariable]
  isServerless: Boolean
  isPublic: Boolean
  isRunpod: Boolean
  readme: String
  category: String
  startSsh: Boolean
  startJupyter: Boolean
  containerRegistryAuthId: String
}

type DataCenter {
  id: String
  name: String
  location: String
  storageSupport: Boolean
  gpuAvailability: [GpuAvailability]
}

type GpuAvailability { gpuTypeId: String displayName: String stockStatus: String available: Boolean }
"""


@cache
def schema() -> GraphQLSchema:
    """Built once per process: building is the slow part, executing against it is cheap."""
    return build_schema(SDL)
